"""Hostile input: the decoder under property-based attack, and a running scorer fed a few
hundred hostile messages between good ones.

The decoder's contract (schemas/codec.py): for any bytes, return a valid TransactionEvent or
raise DecodeError with a one-line reason that names the problem and never echoes the payload;
never anything else. The scorer's: every message that does not decode goes to the dead-letter
topic with that reason, every good one is scored, the process stays up, memory stays bounded.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaException, Message, Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DecodeError, TransactionEvent, decode
from schemas.codec import MAX_MESSAGE_BYTES, encode
from schemas.dead_letter import H_ERROR, H_ERROR_TYPE, H_ORIGINAL_OMITTED
from stream.pipeline.dead_letters import DLQ_MAX_ORIGINAL_BYTES, DeadLetter, dead_letter_message
from stream.pipeline.messages import Incoming
from stream.settings import KafkaSettings, RedisSettings
from tests.helpers import event_ids

from .harness import (
    ScorerStarter,
    account,
    read_all,
    report,
    scorer_settings,
    wait_for_assignment,
    wait_for_ids,
    wait_until,
)
from .hostile import MARKER, MUTATIONS, hostile_message, valid_event

# Deterministic in CI: a fixed derandomized search, no example database between runs.
PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Kinds that can never produce a valid event, whatever the draw.
ALWAYS_INVALID = {
    "missing field", "deep nesting", "NaN/Infinity", "absurd amount", "random bytes",
    "invalid UTF-8", "lone surrogate", "truncated", "not an object", "duplicate keys",
}  # fmt: skip


def check_decoder(raw: bytes) -> TransactionEvent | None:
    """Decode ``raw`` and check the contract; the event, or None when it was refused."""
    refused: DecodeError | None = None
    try:
        event = decode(TransactionEvent, raw)
    except DecodeError as error:  # anything else escapes and fails the property
        refused = error
    if refused is None:
        # Accepted: then it must be a real event that survives its own round trip.
        assert decode(TransactionEvent, encode(event)) == event
        return event
    reason = refused.reason
    assert refused.raw is raw, "the original bytes are kept for the dead-letter topic"
    assert isinstance(reason, str)
    assert reason.strip(), "a reason is never empty"
    assert reason.isprintable(), f"one printable line: {reason!r}"
    assert len(reason) <= 1000, f"a bounded reason, not {len(reason)} characters"
    assert MARKER not in reason, f"the reason echoes the payload: {reason!r}"
    if len(raw) >= 16:
        assert raw.decode("utf-8", "replace") not in reason
    return None


@PROPERTY
@given(rng=st.randoms(use_true_random=False), kind=st.sampled_from(sorted(MUTATIONS)))
def test_decoder_on_mutated_events_returns_an_event_or_a_safe_decode_error(
    rng: random.Random, kind: str
) -> None:
    raw = MUTATIONS[kind](rng, valid_event(rng, "ev-hostile-1"))
    event = check_decoder(raw)
    if kind in ALWAYS_INVALID:
        assert event is None, f"{kind} was accepted: {raw[:200]!r}"


@PROPERTY
@given(rng=st.randoms(use_true_random=False))
def test_decoder_accepts_the_valid_events_the_mutations_start_from(rng: random.Random) -> None:
    # Without this the properties above could pass on a decoder that refuses everything.
    event = check_decoder(orjson.dumps(valid_event(rng, "ev-valid-1")))
    assert event is not None
    assert event.event_id == "ev-valid-1"


@PROPERTY
@given(raw=st.binary(max_size=3000))
def test_decoder_on_arbitrary_bytes(raw: bytes) -> None:
    assert check_decoder(raw) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what JSON encoders emit
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@settings(PROPERTY, max_examples=100)
@given(data=st.dictionaries(st.text(max_size=30), json_values, max_size=20))
def test_decoder_on_arbitrary_json_objects(data: dict[str, object]) -> None:
    check_decoder(orjson.dumps(data))


@PROPERTY
@given(rng=st.randoms(use_true_random=False), field=st.sampled_from(["memo", "device_id"]))
def test_decoder_never_echoes_string_values(rng: random.Random, field: str) -> None:
    event = valid_event(rng, "ev-echo-1")
    event[field] = MARKER * rng.choice([32, 50, 1000])  # too long for either field
    assert check_decoder(orjson.dumps(event)) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "empty message"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), f"over the {MAX_MESSAGE_BYTES}-byte limit"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[" * 2000, "not valid JSON"),
        (b'{"amount_minor": NaN}', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_decoder_reasons_for_messages_that_are_not_events(raw: bytes, expected: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(TransactionEvent, raw)
    assert expected in caught.value.reason


def test_regression_an_unexpected_field_name_was_echoed_into_reasons_and_logs() -> None:
    # The reason named every unexpected key verbatim: a key is part of the payload, so a
    # newline in it forged log lines and a 20 KB key was copied into every log line and
    # dead-letter header. Names that look like field names are still shown (that is what
    # makes "field 'amount': Extra inputs are not permitted" useful).
    event = valid_event(random.Random(1), "ev-regression-1")
    forged = "x\n2026-11-24 ERROR stream.scorer: forged " + MARKER
    for name in (forged, "y" * 20_000):
        with pytest.raises(DecodeError) as caught:
            decode(TransactionEvent, orjson.dumps({**event, name: 1}))
        reason = caught.value.reason
        assert reason.isprintable()
        assert MARKER not in reason
        assert len(reason) < 200
        assert f"name of {len(name)} characters, not shown" in reason
    with pytest.raises(DecodeError) as caught:
        decode(TransactionEvent, orjson.dumps({**event, "amount": 1}))
    assert "field 'amount': Extra inputs are not permitted" in caught.value.reason


def _incoming(value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> Incoming:
    return Incoming("tx", 0, 7, b"key", value, headers, None, _now())


def _now() -> datetime:
    return datetime.now(UTC)


def test_regression_a_message_over_1mb_crashed_the_scorer_when_dead_lettered() -> None:
    # Its dead letter copied the 10 MB original, which librdkafka refuses to produce
    # (MSG_SIZE_TOO_LARGE, raised from produce(), not retriable): the batch failed, the
    # scorer exited, and every restart met the same message first - a poison pill.
    # Checked against librdkafka itself; produce() validates sizes before any network I/O.
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0})
    huge = _incoming(b"x" * 10_000_000, (("h", b"v"),))
    letter = dead_letter_message(DeadLetter(huge, "too big", "invalid_event"), "dlq", _now())
    assert letter.value is None
    assert letter.key is None
    headers = dict(letter.headers)
    assert headers[H_ORIGINAL_OMITTED] == str(10_000_000 + 3 + 1 + 1).encode()
    assert "h" not in headers
    producer.produce(letter.topic, letter.value, letter.key, headers=list(letter.headers))
    with pytest.raises(KafkaException):  # what the old dead letter did
        producer.produce("dlq", huge.value, huge.key)
    # Below the limit the original is copied whole, as docs/scorer.md promises.
    fits = _incoming(b"y" * (DLQ_MAX_ORIGINAL_BYTES - 100), (("h", b"v"),))
    letter = dead_letter_message(DeadLetter(fits, "too big", "invalid_event"), "dlq", _now())
    assert (letter.key, letter.value) == (fits.key, fits.value)
    assert ("h", b"v") in letter.headers
    producer.produce(letter.topic, letter.value, letter.key, headers=list(letter.headers))
    producer.purge()
    producer.flush(0)


# -- the running scorer ---------------------------------------------------------------------

HOSTILE_MESSAGES = 300
GOOD_EVENTS = 300
SEED = 20261124
TEN_MB = 10 * 1024 * 1024


def hostile_inputs(good: list[bytes]) -> list[tuple[str, bytes | None, bytes]]:
    """(case, value, key) in production order: good events in their order with hostile ones
    at seeded random places, then the special cases."""
    rng = random.Random(SEED)
    hostile = [hostile_message(rng, f"ev-hostile-{i:04d}") for i in range(HOSTILE_MESSAGES)]
    inputs: list[tuple[str, bytes | None, bytes]] = [
        (f"good {i}", value, orjson.loads(value)["customer_id"].encode())
        for i, value in enumerate(good)
    ]
    for i, (kind, value) in enumerate(hostile):
        position = rng.randrange(len(inputs) + 1)
        inputs.insert(position, (f"hostile {i}: {kind}", value, f"hostile-{i % 7}".encode()))
    last = orjson.loads(good[-1])
    reused = orjson.dumps({**last, "amount_minor": last["amount_minor"] + 1})
    huge = b'{"memo": "' + MARKER.encode() + b"x" * TEN_MB + b'"}'
    inputs += [
        ("empty", b"", b"special"),
        ("tombstone", None, b"special"),
        ("10 MB", huge, b"special"),
        # Keyed like its original, so it follows it on one partition (see docs/scorer.md).
        ("reused event id", reused, last["customer_id"].encode()),
    ]
    # Poison messages of issue 16: each one stopped the scorer for good (or was accepted).
    poison = {
        "poison: UTC year 10000": {"event_time": "9999-12-31T23:59:59-05:00"},
        "poison: UTC year 0": {"event_time": "0001-01-01T00:00:00+05:00"},
        "poison: digits-only time": {"event_time": "1772359200"},
    }
    for i, (case, changes) in enumerate(poison.items()):
        body = {**orjson.loads(good[i]), "event_id": f"ev-poison-{i}", **changes}
        inputs.append((case, orjson.dumps(body), b"special"))
    escaped_key = orjson.dumps({**orjson.loads(good[5]), "event_id": "ev-poison-key"})[:-1]
    inputs.append(("poison: key twice, escaped", escaped_key + b',"amount_\\u006dinor":1}', b"s"))
    return inputs


@pytest.mark.integration
@pytest.mark.slow
def test_the_scorer_dead_letters_hostile_input_with_reasons_stays_up_and_bounded(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    trained_registry: Path,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    tmp_path: Path,
) -> None:
    settings = scorer_settings(
        kafka_settings,
        redis_settings,
        trained_registry,
        tmp_path / "home",
        transactions_config={"max.message.bytes": str(16 * 1024 * 1024)},
    )
    warm_up, good = stream_values[:100], stream_values[100 : 100 + GOOD_EVENTS]
    inputs = hostile_inputs(good)
    expected_reason: dict[str, str] = {}
    for case, value, _ in inputs:
        try:
            decode(TransactionEvent, value)
        except DecodeError as error:
            expected_reason[case] = error.reason
    expected_reason["reused event id"] = "duplicate event_id"
    assert len(expected_reason) > HOSTILE_MESSAGES * 0.8, "most hostile messages are invalid"

    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    produce_cases(
        kafka_settings, settings.topics.transactions, [("warm-up", v, b"w") for v in warm_up]
    )
    wait_for_ids(kafka_settings, settings, set(event_ids(warm_up)), timeout_s=240)
    warm_rss = scorer.rss_kib()

    peak_rss = [warm_rss]
    done = threading.Event()

    def sample_rss() -> None:
        while not done.is_set() and scorer.alive():
            peak_rss.append(scorer.rss_kib())
            done.wait(0.2)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        produce_cases(kafka_settings, settings.topics.transactions, inputs)
        should_score = set(event_ids(warm_up)) | {
            orjson.loads(v)["event_id"]
            for case, v, _ in inputs
            if case not in expected_reason and v is not None
        }
        wait_for_ids(kafka_settings, settings, should_score, timeout_s=300)
        wait_until(
            lambda: len(read_all(kafka_settings, [settings.topics.dlq])) >= len(expected_reason),
            120,
            "every bad message dead-lettered",
            poll_s=1.0,
        )
    finally:
        done.set()
        sampler.join(10)
    assert scorer.alive(), scorer.log()
    assert scorer.terminate() == 0, scorer.log()

    dead = read_all(kafka_settings, [settings.topics.dlq])
    dead_cases = check_dead_letters(dead, expected_reason)
    assert dead_cases == set(expected_reason), "each bad message dead-lettered exactly once"
    accounting = account(settings, sorted(should_score))
    log = scorer.log()
    report(
        "hostile_input_pipeline",
        fault="hostile input: a scorer fed bad messages between good ones",
        mode="at_least_once",
        accounting=accounting,
        inputs=f"{len(warm_up) + len(inputs)} messages: {len(should_score)} valid events, "
        f"{len(expected_reason)} bad ({HOSTILE_MESSAGES} generated with seed {SEED} over "
        f"{len(MUTATIONS)} kinds, empty, tombstone, 10 MB, reused event id, and 4 poison "
        "messages: times overflowing in UTC both ways, a digits-only time, an escaped "
        "repeated key)",
        command=".venv/bin/pytest tests/reliability/test_hostile_input.py",
        notes=f"{len(dead)} dead letters, each with its reason; RSS {warm_rss // 1024} MiB after "
        f"warm-up, peak {max(peak_rss) // 1024} MiB; scorer up throughout",
        # Per message rather than per event id: bad messages have no usable id.
        events_in=len(warm_up) + len(inputs),
        accounted=accounting.scored + len(dead_cases),
        lost=len(warm_up) + len(inputs) - accounting.scored - len(dead_cases),
        dead_lettered=len(dead_cases),
    )
    assert accounting.lost == 0
    assert accounting.alerts_missing == 0
    assert max(peak_rss) < 2 * warm_rss, f"RSS grew from {warm_rss} to {max(peak_rss)} KiB"
    assert "Traceback" not in log
    assert MARKER not in log, "a payload reached the log"


def produce_cases(
    kafka: KafkaSettings, topic: str, cases: list[tuple[str, bytes | None, bytes]]
) -> None:
    """Produce each case with a ``case`` header naming it (the DLQ keeps original headers)."""
    producer = Producer(
        {
            **kafka.client_config(),
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 16 * 1024 * 1024,
        }
    )
    for case, value, key in cases:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=[("case", case.encode())])
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def check_dead_letters(dead: list[Message], expected_reason: dict[str, str]) -> set[str]:
    """Every dead letter carries its case's reason; returns the cases seen."""
    cases: set[str] = set()
    for message in dead:
        headers = dict(message.headers() or [])
        reason = headers[H_ERROR].decode()
        assert MARKER not in reason
        if H_ORIGINAL_OMITTED in headers:  # too big to copy: identified by its size
            case = "10 MB"
            assert int(headers[H_ORIGINAL_OMITTED]) > TEN_MB
            assert message.value() is None
        else:
            case = headers["case"].decode()
        assert expected_reason[case] in reason, (case, reason)
        assert headers[H_ERROR_TYPE] in (b"invalid_event", b"duplicate_event_id")
        assert case not in cases, f"{case} dead-lettered twice"
        cases.add(case)
    return cases
