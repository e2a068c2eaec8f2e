"""Reprocessing, reused ids and crafted inputs, against the real `riskstream run scorer` on the
session's broker and Redis.

* A rewind of the group's committed offsets redelivers every event: each gets its first
  pass's context features, score and alert id, and nothing is counted twice (the events
  after the rewind see the context a single pass would have built).
* An event id already processed, for another customer or for the same one later, is a dead
  letter, never a second score (event ids are unique in the namespace: docs/scorer.md).
* Crafted inputs cannot steer the context: a time decades ahead is refused, payees chosen to
  collide in CRC32 count as distinct, maximum amounts cannot overflow a sum.
* Property-based, end to end: any mix of valid, malformed and reused-id messages ends with
  every message scored or dead-lettered once, and the scorer up.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas import DecodeError, TransactionEvent, decode
from schemas.alert import Alert
from schemas.dead_letter import H_ERROR, H_ERROR_TYPE
from schemas.features import ContextFeatures
from stream.context.ops import MAX_CONTEXT_CENTS
from stream.pipeline.records import ScoredRecordStore
from stream.redis_client import connect
from stream.settings import KafkaSettings, RedisSettings, Settings
from tests.helpers import event_ids, produce_values

from .harness import (
    ScorerStarter,
    account,
    count_context_differences,
    read_all,
    report,
    scorer_settings,
    wait_for_assignment,
    wait_for_ids,
    wait_until,
)
from .hostile import MARKER, MUTATIONS, crc32_twins, valid_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPRODUCE = ".venv/bin/pytest tests/reliability/test_redelivery.py -k {}"


@pytest.fixture
def make_settings(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    trained_registry: Path,
    tmp_path: Path,
) -> Any:
    def make(partitions: int = 3) -> Settings:
        return scorer_settings(
            kafka_settings,
            redis_settings,
            trained_registry,
            tmp_path / "home",
            partitions=partitions,
        )

    return make


def records_of(settings: Settings, ids: list[str]) -> dict[str, Any]:
    client = connect(settings.redis)
    try:
        found = ScoredRecordStore(client, settings.context.namespace, 3600).get_batch(ids)
    finally:
        client.close()
    return {i: r for i, r in zip(ids, found, strict=True) if r is not None}


def scores_by_pass(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every score message per event id, in the order written (one scores partition)."""
    passes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in read_all(settings.kafka, [settings.topics.scores]):
        body = orjson.loads(message.value())
        passes[body["event_id"]].append(body)
    return passes


def rewind_to_start(settings: Settings, partitions: int) -> None:
    admin = AdminClient(settings.kafka.client_config())
    request = ConsumerGroupTopicPartitions(
        settings.scorer.group_id,
        [TopicPartition(settings.topics.transactions, p, 0) for p in range(partitions)],
    )
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(timeout=60)


def test_a_rewind_of_committed_offsets_reprocesses_every_event_to_the_same_outputs(
    make_settings: Any, stream_values: list[bytes], start_scorer: ScorerStarter
) -> None:
    # One partition: the continuation's reference context is then computed in the order the
    # scorer read the events, counterparties included.
    settings = make_settings(partitions=1)
    first, continuation = stream_values[:900], stream_values[900:1050]
    first_ids, continuation_ids = event_ids(first), event_ids(continuation)
    produce_values(settings.kafka, settings.topics.transactions, first)
    scorer = start_scorer(settings, name="first-pass")
    wait_for_ids(settings.kafka, settings, set(first_ids), timeout_s=300)
    assert scorer.terminate() == 0, scorer.log()
    before = records_of(settings, first_ids)
    first_pass = {i: s[0] for i, s in scores_by_pass(settings).items()}

    rewind_to_start(settings, 1)  # the situation a crash between delivery and commit creates
    again = start_scorer(settings, name="rewound")
    wait_until(
        lambda: sum(len(s) >= 2 for s in scores_by_pass(settings).values()) >= len(first_ids),
        300,
        "every rewound event scored again",
        poll_s=2.0,
    )
    produce_values(settings.kafka, settings.topics.transactions, continuation)
    wait_for_ids(settings.kafka, settings, set(continuation_ids), timeout_s=300)
    assert again.terminate() == 0, again.log()

    passes = scores_by_pass(settings)
    after = records_of(settings, first_ids)
    score_changed = [i for i in first_ids if passes[i][1]["score"] != first_pass[i]["score"]]
    alert_changed = [i for i in first_ids if passes[i][1]["alerted"] != first_pass[i]["alerted"]]
    features_changed = [i for i in first_ids if after[i].features != before[i].features]
    alerts = [decode(Alert, m.value()) for m in read_all(settings.kafka, [settings.topics.alerts])]
    alert_ids = Counter(a.alert_id for a in alerts)
    alerted = {i for i in first_ids if first_pass[i]["alerted"]}
    # The continuation (and, through the records, every event) against one fault-free pass.
    differing = count_context_differences(
        settings, first + continuation, first_ids + continuation_ids
    )
    accounting = account(settings, first_ids + continuation_ids)
    report(
        "rewind",
        fault=f"committed offsets rewound to the start after {len(first_ids)} events (group "
        "stopped, offsets reset with the admin API), scorer restarted",
        mode="at_least_once",
        accounting=accounting,
        inputs=f"{len(first_ids)} simulated events, then {len(continuation_ids)} more after "
        "the rewind",
        command=REPRODUCE.format("rewind"),
        notes=f"{len(first_ids)} redelivered: {len(score_changed)} with another score, "
        f"{len(alert_changed)} alerted differently, {len(features_changed)} with other "
        f"context features; {len(alerted)} alerts re-produced with their first ids; "
        f"{differing} of {len(first_ids) + len(continuation_ids)} events' context differs "
        "from a single pass",
    )
    assert accounting.lost == 0
    assert score_changed == []
    assert alert_changed == []
    assert features_changed == []
    assert alerted, "the test model alerts on a few percent of events"
    assert {a.event.event_id for a in alerts} >= alerted
    assert all(
        alert_ids[a] == 2 for a in {x.alert_id for x in alerts if x.event.event_id in alerted}
    )
    assert differing == 0, "the rewind counted events twice in the context"


def produce_cases(
    kafka: KafkaSettings, topic: str, cases: list[tuple[str, bytes | None, bytes]]
) -> None:
    """Produce (case, value, key) with a ``case`` header (dead letters keep headers)."""
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 5})
    for case, value, key in cases:
        producer.produce(topic, value=value, key=key, headers=[("case", case.encode())])
        producer.poll(0)
    assert producer.flush(60) == 0


def dead_letters_by_case(settings: Settings) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for message in read_all(settings.kafka, [settings.topics.dlq]):
        headers = dict(message.headers() or [])
        case = headers["case"].decode()
        assert case not in found, f"{case} dead-lettered twice"
        found[case] = (headers[H_ERROR_TYPE].decode(), headers[H_ERROR].decode())
    return found


def test_a_reused_event_id_is_a_dead_letter_for_another_customer_and_later_for_the_same(
    make_settings: Any, stream_values: list[bytes], start_scorer: ScorerStarter
) -> None:
    settings = make_settings()
    good = stream_values[:200]
    produce_values(settings.kafka, settings.topics.transactions, good)
    scorer = start_scorer(settings)
    wait_for_ids(settings.kafka, settings, set(event_ids(good)), timeout_s=300)

    original = orjson.loads(good[50])
    customer, later_time = original["customer_id"], datetime.fromisoformat(original["event_time"])
    other = {**original, "customer_id": "cus-other", "account_id": "acc-other"}
    moved_on = {
        **original,
        "event_id": "ev-moved-on",
        "event_time": (later_time + timedelta(hours=9)).isoformat().replace("+00:00", "Z"),
    }
    same_later = {
        **original,
        "amount_minor": original["amount_minor"] * 3,
        "event_time": (later_time + timedelta(hours=9, minutes=5))
        .isoformat()
        .replace("+00:00", "Z"),
    }
    cases = [
        # the same id for another customer at the same counterparty: another partition, maybe
        ("other customer", orjson.dumps(other), b"cus-other"),
        # the customer moves on 9 hours (past the dedupe memory's span), then the id again
        ("moved on", orjson.dumps(moved_on), customer.encode()),
        ("same customer later", orjson.dumps(same_later), customer.encode()),
    ]
    produce_cases(settings.kafka, settings.topics.transactions, cases)
    wait_for_ids(settings.kafka, settings, {"ev-moved-on"}, timeout_s=120)
    wait_until(lambda: len(dead_letters_by_case(settings)) >= 2, 120, "two dead letters")
    assert scorer.terminate() == 0, scorer.log()

    dead = dead_letters_by_case(settings)
    passes = scores_by_pass(settings)
    accounting = account(settings, [*event_ids(good), "ev-moved-on"])
    report(
        "reused_ids",
        fault="event ids reused: for another customer at the same counterparty, and for the "
        "same customer after it moved on 9 h",
        mode="at_least_once",
        accounting=accounting,
        inputs=f"{len(good)} simulated events, then 2 reused ids and 1 new event",
        command=REPRODUCE.format("reused_event_id"),
        notes=f"{sum(k == 'duplicate_event_id' for k, _ in dead.values())} of 2 reuses "
        "dead-lettered as duplicate_event_id; the original scored "
        f"{len(passes[original['event_id']])} time(s)",
    )
    assert set(dead) == {"other customer", "same customer later"}
    for kind, reason in dead.values():
        assert kind == "duplicate_event_id"
        assert f"duplicate event_id '{original['event_id']}': first seen at" in reason
    assert len(passes[original["event_id"]]) == 1
    assert accounting.lost == 0


def test_crafted_inputs_cannot_steer_the_context_of_a_running_scorer(
    make_settings: Any, stream_values: list[bytes], start_scorer: ScorerStarter
) -> None:
    settings = make_settings()
    warm = stream_values[:100]
    produce_values(settings.kafka, settings.topics.transactions, warm)
    base = orjson.loads(warm[-1])
    start = datetime.fromisoformat(base["event_time"]) + timedelta(hours=1)

    def event(event_id: str, customer: str, minutes: float, **changes: Any) -> bytes:
        when = (start + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
        return orjson.dumps(
            {
                **base,
                "event_id": event_id,
                "customer_id": customer,
                "account_id": f"acc-{customer}",
                "event_time": when.replace("+00:00", "Z"),
                "direction": "outbound",
                "channel": "p2p",
                "counterparty_type": "account",
                **changes,
            }
        )

    payees = crc32_twins("acct-", 6)
    future = event("ev-future", "cus-time", 0, event_time="2056-01-01T00:00:00Z")
    crafted: list[tuple[str, bytes | None, bytes]] = [
        # decades ahead, then an ordinary event of the same customer
        ("far future", future, b"cus-time"),
        ("after the future one", event("ev-after-future", "cus-time", 1), b"cus-time"),
    ]
    for i, payee in enumerate(payees):  # six payees whose ids share one CRC32
        payment = event(f"ev-payee-{i}", "cus-payees", i, counterparty_id=payee)
        crafted.append((f"payee {i}", payment, b"cus-payees"))
    for i in range(6):  # the largest amounts the wire allows, in a currency above the dollar
        payment = event(f"ev-max-{i}", "cus-max", i, amount_minor=10**14, currency="GBP")
        crafted.append((f"max {i}", payment, b"cus-max"))
    produce_cases(settings.kafka, settings.topics.transactions, crafted)
    scorer = start_scorer(settings)
    expected = set(event_ids(warm)) | {
        orjson.loads(v or b"")["event_id"] for _, v, _ in crafted[1:]
    }
    wait_for_ids(settings.kafka, settings, expected, timeout_s=300)
    wait_until(lambda: "far future" in dead_letters_by_case(settings), 60, "the future event")
    assert scorer.terminate() == 0, scorer.log()

    dead = dead_letters_by_case(settings)
    records = records_of(settings, sorted(expected))
    features = {i: ContextFeatures._make(r.features) for i, r in records.items()}
    after_future = features["ev-after-future"]
    payee_counts = [features[f"ev-payee-{i}"].distinct_counterparties_1h for i in range(6)]
    sums = [features[f"ev-max-{i}"] for i in range(6)]
    report(
        "crafted_inputs",
        fault="crafted inputs: an event dated 30 years ahead, 6 payees with one CRC32, 6 "
        "payments of 10^14 pence on one day",
        mode="at_least_once",
        accounting=account(settings, sorted(expected)),
        inputs=f"{len(warm)} simulated events + {len(crafted)} crafted",
        command=REPRODUCE.format("crafted_inputs"),
        notes=f"future event: {dead.get('far future', ('scored', ''))[0]}; the customer's next "
        f"event late={after_future.late:.0f}; distinct payees counted {payee_counts}; "
        f"largest 24h sum ${max(f.out_sum_24h for f in sums):,.0f} (a payment counts "
        f"${MAX_CONTEXT_CENTS / 100:,.0f} at most)",
    )
    assert dead["far future"][0] == "event_time_out_of_window"
    assert after_future.late == 0
    assert after_future.seconds_since_previous == -1  # its first event: the future one is gone
    assert payee_counts == [1, 2, 3, 4, 5, 6]
    for i, f in enumerate(sums, start=1):
        assert f.out_sum_24h == pytest.approx(i * MAX_CONTEXT_CENTS / 100, rel=1e-6)
        assert 0 < f.out_sum_7d < 2**53 / 100


# -- property-based, end to end -------------------------------------------------------------------

E2E = settings(
    max_examples=15,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # No shrinking: every example costs a broker round trip, and a failure's example is
    # readable as generated (at most six messages).
    phases=[Phase.explicit, Phase.generate],
)
REUSED = [f"ev-e2e-{i}" for i in range(4)]


@st.composite
def e2e_message(draw: st.DrawFn, now: datetime) -> bytes | None:
    """Valid events around now (from 30 days behind to a few hours ahead, some 20 years
    ahead, any offset), reused ids, hostile mutations, raw bytes, tombstones."""
    kind = draw(st.sampled_from(["valid", "valid", "reuse", "mutated", "bytes", "none"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=64))
    rng = draw(st.randoms(use_true_random=False))
    event_id = draw(st.sampled_from(REUSED)) if kind == "reuse" else f"ev-{rng.getrandbits(48):x}"
    body = valid_event(rng, event_id)
    if kind == "mutated":
        return MUTATIONS[draw(st.sampled_from(sorted(MUTATIONS)))](rng, body)
    ahead = draw(st.sampled_from([-86_400 * 30, -3600, 0, 1800, 3 * 3600, 86_400 * 365 * 20]))
    offset = draw(st.integers(-(23 * 60), 23 * 60))
    local = now + timedelta(seconds=ahead) + timedelta(minutes=offset)
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    body["event_time"] = f"{local:%Y-%m-%dT%H:%M:%S}{sign}{hours:02d}:{minutes:02d}"
    body["amount_minor"] = draw(st.sampled_from([1, 999, 10**9, 10**14, 10**14 + 1]))
    return orjson.dumps(body)


def test_any_messages_end_scored_or_dead_lettered_once_on_a_running_scorer(
    make_settings: Any, start_scorer: ScorerStarter
) -> None:
    settings = make_settings()
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    produced: list[tuple[str, str]] = []  # (case, event id or "")
    counter = iter(range(10**6))

    @E2E
    @given(st.lists(e2e_message(datetime.now(UTC)), min_size=1, max_size=6))
    def check(messages: list[bytes | None]) -> None:
        cases = []
        for value in messages:
            case = f"case-{next(counter)}"
            cases.append((case, value, random.choice([b"k1", b"k2", b"k3"])))
            produced.append((case, decodable_id(value)))
        produce_cases(settings.kafka, settings.topics.transactions, cases)
        wait_until(lambda: all_accounted(settings, produced), 120, "every message accounted")

    check()
    assert scorer.alive(), scorer.log()
    assert scorer.terminate() == 0, scorer.log()
    assert "Traceback" not in scorer.log()
    assert MARKER not in scorer.log()
    dead = dead_letters_by_case(settings)
    kinds = Counter(kind for kind, _ in dead.values())
    scored = sum(1 for case, _ in produced if case not in dead)
    report(
        "property_e2e",
        fault="hypothesis-generated messages (valid, reused ids, times from 30 days behind to "
        "20 years ahead with any offset, amounts to 10^14 + 1, mutations, raw bytes, "
        "tombstones) fed to a running scorer",
        mode="at_least_once",
        inputs=f"{len(produced)} messages in {E2E.max_examples} examples",
        command=REPRODUCE.format("any_messages"),
        notes=f"{scored} scored, {len(dead)} dead-lettered ({dict(sorted(kinds.items()))}); "
        "scorer up throughout, no traceback",
        events_in=len(produced),
        accounted=scored + len(dead),
        lost=len(produced) - scored - len(dead),
    )
    assert "unprocessable_event" not in kinds, "an exception no rule expected"


def decodable_id(value: bytes | None) -> str:
    """The event id of a message the decoder accepts (some mutations leave an event valid),
    else "": such a message can only end as a dead letter."""
    try:
        return decode(TransactionEvent, value).event_id
    except DecodeError:
        return ""


def all_accounted(settings: Settings, produced: list[tuple[str, str]]) -> bool:
    """Every produced case has exactly one outcome: a dead letter naming it, or - for one
    case per event id, the one that claimed it - a score."""
    dead = dead_letters_by_case(settings)
    scores = Counter(
        orjson.loads(m.value())["event_id"]
        for m in read_all(settings.kafka, [settings.topics.scores])
    )
    claimants: dict[str, list[str]] = defaultdict(list)
    for case, event_id in produced:
        if case in dead:
            continue
        if not event_id:
            return False  # a message without a usable id must be a dead letter
        claimants[event_id].append(case)
    for event_id, cases in claimants.items():
        assert len(cases) <= 1, f"{cases} all took {event_id}"
        if scores[event_id] < 1:
            return False
        assert scores[event_id] == 1, f"{event_id} scored {scores[event_id]} times"
    return True
