"""The scorer's processing core (``BatchProcessor``: decode, claim, context, narrate, score,
explain, persist) on the real redis-server and the session's trained model, without Kafka:
whatever a batch holds, no exception escapes it, and every message ends scored or
dead-lettered exactly once - property-based, over timestamps, offsets, amounts, ids and JSON
shapes on both sides of what is accepted - plus the cases that broke it, pinned.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.inference import LoadedModel, Predictions, load_model
from models.settings import ModelSettings
from schemas import TransactionEvent, alert_id_for
from schemas.dead_letter import H_ERROR, H_ERROR_TYPE, H_SOURCE_OFFSET, H_SOURCE_PARTITION
from schemas.features import ContextFeatures
from schemas.narrative import Narrative
from schemas.story import unpack_story
from stream.context.store import ContextStore, EventContext
from stream.pipeline.messages import Incoming
from stream.pipeline.records import ScoredRecordStore, record_key
from stream.scorer.app import narrator_for
from stream.scorer.core import EventWindow, Narrate
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.processor import BatchOutputs, BatchProcessor, OutputTopics
from stream.settings import ContextSettings

from .hostile import MARKER, MUTATIONS, valid_event

pytestmark = pytest.mark.integration

TOPICS = OutputTopics(alerts="alerts", dlq="dlq", scores="scores")
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # the processing clock of these tests
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.fixture(scope="module")
def model(trained_registry: Path) -> LoadedModel:
    return load_model(ModelSettings(registry_dir=trained_registry))


@dataclass
class Core:
    """A processor on its own namespace, and the offsets of the messages it was handed."""

    processor: BatchProcessor
    store: ContextStore
    records: ScoredRecordStore
    offsets: Iterator[int]

    def incoming(
        self, value: bytes | None, *, partition: int = 0, offset: int | None = None
    ) -> Incoming:
        return Incoming(
            topic="tx",
            partition=partition,
            offset=next(self.offsets) if offset is None else offset,
            key=b"k",
            value=value,
            headers=(),
            timestamp_ms=NOW_MS,
            received_at=NOW,
        )


@pytest.fixture
def make_core(
    redis_client: redis.Redis[bytes], redis_namespace: str
) -> Iterator[Callable[..., Core]]:
    made: list[Core] = []

    def make(narrator: Callable[[LoadedModel], Narrate] = narrator_for, suffix: str = "") -> Core:
        namespace = redis_namespace + suffix
        store = ContextStore(
            redis_client, ContextSettings(namespace=namespace), create_namespace=True
        )
        records = ScoredRecordStore(redis_client, namespace, 3600)
        processor = BatchProcessor(
            store=store,
            records=records,
            narrator=narrator,
            metrics=ScorerMetrics(),
            topics=TOPICS,
            window=EventWindow.of(3600, None),
        )
        core = Core(processor, store, records, iter(range(10**9)))
        made.append(core)
        return core

    yield make
    for core in made:
        core.store.close()
        core.store.drop_namespace()


@dataclass
class Outcome:
    """A processed batch, by input position: its score or its dead letter."""

    scores: dict[int, dict[str, Any]]
    dead: dict[int, tuple[str, str]]  # offset -> (error type, reason)
    alerts: dict[str, str]  # event id -> alert id
    outputs: BatchOutputs


def outcome(outputs: BatchOutputs, batch: Sequence[Incoming]) -> Outcome:
    """Map every output back to the input it is about; asserts each input has exactly one."""
    by_id = {}
    for incoming in batch:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            by_id.setdefault(orjson.loads(incoming.value or b"")["event_id"], []).append(incoming)
    scores: dict[int, dict[str, Any]] = {}
    dead: dict[int, tuple[str, str]] = {}
    alerts: dict[str, str] = {}
    dead_offsets = []
    for message in outputs.messages:
        headers = dict(message.headers)
        if message.topic == "dlq":
            offset = int(headers[H_SOURCE_OFFSET])
            assert int(headers[H_SOURCE_PARTITION]) in {m.partition for m in batch}
            dead_offsets.append(offset)
            dead[offset] = (headers[H_ERROR_TYPE].decode(), headers[H_ERROR].decode())
    for message in outputs.messages:
        if message.topic == "scores":
            body = orjson.loads(message.value or b"")
            dead_or_not = [m for m in by_id[body["event_id"]] if m.offset not in dead_offsets]
            scores[dead_or_not[0].offset] = body
        elif message.topic == "alerts":
            body = orjson.loads(message.value or b"")
            alerts[body["event"]["event_id"]] = body["alert_id"]
    assert len(dead_offsets) == len(set(dead_offsets)), "a message dead-lettered twice"
    assert not set(scores) & set(dead), "a message both scored and dead-lettered"
    assert set(scores) | set(dead) == {m.offset for m in batch}, "a message went missing"
    assert outputs.scored == len(scores)
    assert outputs.dead == len(dead)
    return Outcome(scores, dead, alerts, outputs)


def event_bytes(event_id: str, **changes: Any) -> bytes:
    body = valid_event(random.Random(event_id), event_id)
    body["event_time"] = "2026-03-04T11:00:00Z"
    return orjson.dumps({**body, **changes})


# -- the cases that broke it ---------------------------------------------------------------------


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_regression_a_time_overflowing_in_utc_failed_its_batch(
    make_core: Callable[..., Core], model: LoadedModel, when: str
) -> None:
    core = make_core()
    batch = [
        core.incoming(event_bytes("ev-good-1")),
        core.incoming(event_bytes("ev-poison", event_time=when)),
        core.incoming(event_bytes("ev-good-2")),
    ]
    result = outcome(core.processor.process(batch, model), batch)
    assert set(result.scores) == {batch[0].offset, batch[2].offset}
    kind, reason = result.dead[batch[1].offset]
    assert kind == "invalid_event"
    assert "event_time" in reason
    assert "out of range" in reason


def test_an_event_dated_far_ahead_is_dead_lettered_and_cannot_blind_its_customer(
    make_core: Callable[..., Core], model: LoadedModel
) -> None:
    core = make_core()
    customer = {"customer_id": "cus-blind", "account_id": "acc-blind", "direction": "outbound"}
    batch = [
        core.incoming(event_bytes("ev-future", event_time="2046-03-04T11:00:00Z", **customer)),
        core.incoming(event_bytes("ev-soon", event_time="2026-03-04T12:59:00Z", **customer)),
    ]
    result = outcome(core.processor.process(batch, model), batch)
    kind, reason = result.dead[batch[0].offset]
    assert kind == "event_time_out_of_window"
    assert "20.0 years ahead of the processing clock" in reason
    assert batch[1].offset in result.scores  # 59 minutes ahead: inside the hour allowed

    # The customer's next events are on time: nothing moved their newest time decades ahead.
    later = [core.incoming(event_bytes("ev-next", event_time="2026-03-04T13:00:00Z", **customer))]
    outcome(core.processor.process(later, model), later)
    (record,) = core.records.get_batch(["ev-next"])
    assert record is not None
    features = ContextFeatures._make(record.features)
    assert features.late == 0
    assert features.out_count_1h == 2


class FailingOn:
    """A narrator (as the scorer builds one per model) that raises on one event id - standing
    in for any content-driven bug in narrative code - or returns a non-finite feature."""

    def __init__(self, event_id: str, how: str) -> None:
        self.event_id, self.how = event_id, how

    def __call__(self, model: LoadedModel) -> Narrate:
        narrate = narrator_for(model)

        def wrapped(event: TransactionEvent, context: EventContext) -> Narrative:
            if event.event_id != self.event_id:
                return narrate(event, context)
            if self.how == "raise":
                raise KeyError(MARKER)
            broken = context.features._replace(amount_zscore=float("inf"))
            return narrate(event, replace(context, features=broken))

        return wrapped


@pytest.mark.parametrize("how", ["raise", "inf"])
def test_a_narrative_that_breaks_on_one_event_dead_letters_that_event_only(
    make_core: Callable[..., Core], model: LoadedModel, how: str
) -> None:
    core = make_core(FailingOn("ev-bad", how))
    batch = [core.incoming(event_bytes(f"ev-{i}")) for i in range(5)]
    batch.insert(2, core.incoming(event_bytes("ev-bad")))
    result = outcome(core.processor.process(batch, model), batch)
    kind, reason = result.dead[batch[2].offset]
    assert kind == "unprocessable_event"
    assert reason.startswith("narrating failed on this event")
    assert MARKER not in reason  # an exception's message may quote the payload: never shown
    assert len(result.scores) == 5


class PoisonedModel(LoadedModel):
    """The model, failing every call that includes an event of ``amount_usd`` (the way a
    tokenizer or model bug triggered by one input fails the whole batch call); with
    ``amount_usd`` None, every call (a broken model)."""

    amount_usd: float | None = None

    def predict_batch(self, narratives: Sequence[str], features: Any = None) -> Predictions:
        rows = np.asarray(features, dtype=np.float64)
        trigger = self.amount_usd
        if trigger is None or (len(rows) and np.isclose(rows[:, 0], trigger).any()):
            raise RuntimeError("model failure triggered by input")
        return super().predict_batch(narratives, features)


def poisoned(model: LoadedModel, amount_usd: float | None) -> PoisonedModel:
    copy = PoisonedModel(**{f.name: getattr(model, f.name) for f in fields(model)})
    copy.amount_usd = amount_usd
    return copy


def test_a_model_call_that_fails_on_one_event_dead_letters_that_event_only(
    make_core: Callable[..., Core], model: LoadedModel
) -> None:
    core = make_core()
    bad = poisoned(model, 123_456.78)  # amount_usd is the first feature of every event
    batch = [core.incoming(event_bytes(f"ev-{i}", currency="USD")) for i in range(4)]
    batch.insert(1, core.incoming(event_bytes("ev-x", currency="USD", amount_minor=12_345_678)))
    result = outcome(core.processor.process(batch, bad), batch)
    kind, reason = result.dead[batch[1].offset]
    assert kind == "unprocessable_event"
    assert reason.startswith("scoring failed on this event (RuntimeError)")
    assert len(result.scores) == 4


def test_a_model_that_fails_on_everything_fails_the_batch_instead_of_dead_lettering_it(
    make_core: Callable[..., Core], model: LoadedModel
) -> None:
    # Not input: a broken model. Dead-lettering every event would lose the stream quietly.
    core = make_core()
    batch = [core.incoming(event_bytes(f"ev-{i}")) for i in range(3)]
    with pytest.raises(RuntimeError, match="model failure"):
        core.processor.process(batch, poisoned(model, None))


# -- redeliveries and reused ids ---------------------------------------------------------------


def test_a_redelivered_batch_gets_its_recorded_context_score_and_alert_ids(
    make_core: Callable[..., Core], model: LoadedModel, stream_values: list[bytes]
) -> None:
    core = make_core()
    values = stream_values[:900]
    first_batch = [core.incoming(v, offset=i) for i, v in enumerate(values)]
    first = outcome(core.processor.process(first_batch, model), first_batch)
    # A rewind: the same messages again (same offsets), in other batch shapes.
    again = [core.incoming(v, offset=i) for i, v in enumerate(values)]
    second = outcome(core.processor.process(again[:300], model), again[:300])
    third = outcome(core.processor.process(again[300:], model), again[300:])
    assert not first.dead
    assert not second.dead
    assert not third.dead
    assert {**second.scores, **third.scores} == first.scores
    assert {**second.alerts, **third.alerts} == first.alerts
    assert first.alerts, "the model alerts on a few percent of events"
    for event_id, alert_id in first.alerts.items():
        assert alert_id == alert_id_for(event_id, model.version)


@pytest.mark.parametrize("recorded", [True, False])
def test_a_redelivered_event_gets_the_same_story_and_context_back(
    make_core: Callable[..., Core],
    model: LoadedModel,
    redis_client: redis.Redis[bytes],
    recorded: bool,
) -> None:
    """Issue 15: idempotent by event id - the story and the context of a redelivered event
    are the ones it got the first time, whether its scored record was written (the claim
    returns it) or not (the scorer died first: the context's dedupe memory returns them)."""
    core = make_core()
    customer = {"customer_id": "cus-story", "account_id": "acc-story"}
    values = [
        event_bytes(f"ev-story-{i}", event_time=f"2026-03-04T11:{10 + i:02d}:00Z", **customer)
        for i in range(8)
    ]
    batch = [core.incoming(v, offset=100 + i) for i, v in enumerate(values)]
    first = outcome(core.processor.process(batch, model), batch)
    ids = [f"ev-story-{i}" for i in range(8)]
    before = core.records.get_batch(ids)
    assert all(r is not None for r in before)
    stories = [unpack_story(bytes.fromhex(r.story)) for r in before if r is not None]
    assert [len(s) for s in stories] == list(range(8)), "each event is told the ones before it"
    if model.narrative_spec.get("template_version", "n2") != "n1":
        last = before[-1]
        assert last is not None
        assert "story_1" in last.clause_ids
    if not recorded:  # the scorer died after the context, before the records
        for event_id in ids:
            redis_client.delete(record_key(core.store.namespace, event_id))

    again = [core.incoming(v, offset=100 + i) for i, v in enumerate(values)]
    second = outcome(core.processor.process(again, model), again)
    after = core.records.get_batch(ids)
    assert not second.dead
    assert second.scores == first.scores
    for old, new in zip(before, after, strict=True):
        assert old is not None
        assert new is not None
        assert (new.story, new.features, new.narrative) == (old.story, old.features, old.narrative)


def test_an_event_id_reused_for_another_customer_or_later_is_a_dead_letter(
    make_core: Callable[..., Core], model: LoadedModel
) -> None:
    core = make_core()
    original = event_bytes("ev-shared", customer_id="cus-a", account_id="acc-a")
    batch = [core.incoming(original)]
    outcome(core.processor.process(batch, model), batch)
    reuses = [
        # the same id for another customer, in a later batch
        event_bytes("ev-shared", customer_id="cus-b", account_id="acc-b"),
        # the same id for the same customer, hours later (after the dedupe span)
        event_bytes(
            "ev-shared", customer_id="cus-a", account_id="acc-a", event_time="2026-03-04T11:30:00Z"
        ),
    ]
    later = [core.incoming(event_bytes("ev-other", customer_id="cus-a", account_id="acc-a"))]
    later += [core.incoming(v) for v in reuses]
    result = outcome(core.processor.process(later, model), later)
    for message in later[1:]:
        kind, reason = result.dead[message.offset]
        assert kind == "duplicate_event_id"
        assert f"first seen at tx[0]@{batch[0].offset}" in reason
    assert list(result.scores) == [later[0].offset]


def test_two_scorers_claiming_one_id_at_once_one_wins(
    make_core: Callable[..., Core], redis_client: redis.Redis[bytes], redis_namespace: str
) -> None:
    make_core()  # the namespace, marked in use
    stores = [ScoredRecordStore(redis_client, redis_namespace, 60) for _ in range(8)]
    results: list[str | None] = [None] * 8
    start = threading.Barrier(8)

    def claim(i: int) -> None:
        start.wait()
        (found,) = stores[i].claim_batch([("ev-raced", f"tx[{i}]@0")])
        results[i] = found.first_source

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, first in enumerate(results) if first is None]
    assert len(winners) == 1
    assert all(first == f"tx[{winners[0]}]@0" for first in results if first is not None)


# -- property: anything in, every message out exactly once ---------------------------------------

PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

offsets_minutes = st.integers(-(24 * 60 - 1), 24 * 60 - 1)


@st.composite
def event_time(draw: st.DrawFn) -> str:
    """RFC 3339 times from the year 1 to 9999 with any offset, most near the clock."""
    if draw(st.booleans()):
        moment = NOW + timedelta(seconds=draw(st.integers(-40 * 86_400, 3 * 3600)))
    else:
        moment = draw(
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
        ).replace(tzinfo=UTC)
    offset = draw(offsets_minutes)
    local = moment.replace(tzinfo=None) + timedelta(minutes=offset)
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return (
        f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond // 1000:03d}{sign}{hours:02d}:{minutes:02d}"
    )


@st.composite
def message(draw: st.DrawFn, ids: list[str]) -> bytes | None:
    kind = draw(st.sampled_from(["valid", "valid", "valid", "mutated", "bytes", "none"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    event_id = draw(st.sampled_from(ids) | st.text("abc0123-:._", min_size=1, max_size=12))
    if not event_id[0].isalnum():
        event_id = "e" + event_id
    rng = draw(st.randoms(use_true_random=False))
    body = valid_event(rng, event_id)
    if kind == "mutated":
        return MUTATIONS[draw(st.sampled_from(sorted(MUTATIONS)))](rng, body)
    body["event_time"] = draw(event_time())
    body["amount_minor"] = draw(
        st.integers(1, 10**14) | st.sampled_from([1, 10**14, 10**14 + 1, 0, -5])
    )
    body["currency"] = draw(st.sampled_from(["USD", "GBP", "JPY", "KWD", "IRR", "XPF", "CLF"]))
    body["customer_id"] = draw(st.sampled_from(["cus-p1", "cus-p2", "cus-p3"]))
    body["counterparty_id"] = draw(st.sampled_from(["cp-1", "cp-2", event_id]))
    return orjson.dumps(body)


SHARED_IDS = [f"ev-p{i}" for i in range(6)]


@pytest.fixture(scope="module")
def shared_core(redis_url: str, trained_registry: Path) -> Iterator[tuple[Core, LoadedModel]]:
    """One processor for every example (ids are reused across examples, as redeliveries and
    reuses would meet ones already claimed)."""
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    namespace = f"test-property-{random.getrandbits(40):x}"
    store = ContextStore(client, ContextSettings(namespace=namespace), create_namespace=True)
    records = ScoredRecordStore(client, namespace, 3600)
    processor = BatchProcessor(
        store=store,
        records=records,
        narrator=narrator_for,
        metrics=ScorerMetrics(),
        topics=TOPICS,
        window=EventWindow.of(3600, 30 * 86_400),
    )
    yield (
        Core(processor, store, records, iter(range(10**9))),
        load_model(ModelSettings(registry_dir=trained_registry)),
    )
    store.close()
    store.drop_namespace()
    client.close()


@PROPERTY
@given(data=st.data())
def test_any_batch_ends_with_every_message_scored_or_dead_lettered_once(
    shared_core: tuple[Core, LoadedModel], data: st.DataObject
) -> None:
    core, model = shared_core
    values = data.draw(st.lists(message(SHARED_IDS), min_size=1, max_size=6))
    partition = data.draw(st.integers(0, 2))
    batch = [core.incoming(v, partition=partition) for v in values]
    result = outcome(core.processor.process(batch, model), batch)
    if data.draw(st.booleans()):  # redelivered: the same messages give the same outcome
        again = outcome(core.processor.process(batch, model), batch)
        assert again.scores == result.scores
        assert again.alerts == result.alerts
        assert {k: kind for k, (kind, _) in again.dead.items()} == {
            k: kind for k, (kind, _) in result.dead.items()
        }
    for _offset, (kind, reason) in result.dead.items():
        assert kind in {
            "invalid_event", "event_time_out_of_window", "duplicate_event_id",
            "unprocessable_event",
        }  # fmt: skip
        assert reason.isprintable()
        assert MARKER not in reason
        assert kind != "unprocessable_event", f"an exception no rule expected: {reason}"
    for body in result.scores.values():
        assert 0.0 <= body["score"] <= 1.0
