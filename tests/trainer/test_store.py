"""The case store, the record sampler and label ingestion on a real redis-server."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from schemas import LabelSource
from stream.context.store import ContextStore
from stream.pipeline.records import ScoredRecordStore
from stream.settings import ContextSettings
from stream.trainer.cases import JoinOutcome
from stream.trainer.ingest import LabelIngestor
from stream.trainer.metrics import TrainerMetrics
from stream.trainer.store import CaseStore, RecordSampler

from .conftest import DAY_MS, T0, case, label, record

pytestmark = pytest.mark.integration


def store(client: redis.Redis[bytes], namespace: str, max_cases: int = 1000) -> CaseStore:
    return CaseStore(client, namespace, max_cases=max_cases, ttl_s=3600, max_unjoined=3)


def test_cases_are_stored_once_per_label_id_with_sequence_and_class_counts(
    redis_client: redis.Redis[bytes], redis_namespace: str
) -> None:
    cases = store(redis_client, redis_namespace)
    first = [case("e1", suspicious=True), case("e2"), case("e3")]
    assert cases.add_cases(first) == 3
    assert cases.add_cases([case("e1", suspicious=True), case("e4", suspicious=True)]) == 1
    state = cases.state()
    assert (state.seq, state.suspicious, state.legitimate, state.new_cases) == (4, 2, 2, 4)
    assert [(seq, c.event_id) for seq, c in cases.load_cases()] == [
        (1, "e1"), (2, "e2"), (3, "e3"), (4, "e4"),
    ]  # fmt: skip
    assert cases.load_cases()[0][1] == first[0]

    cases.mark_finetune(state.seq, at_ms=123)
    cases.add_cases([case("e5")])
    later = cases.state()
    assert (later.new_cases, later.finetune_at_ms) == (1, 123)
    for key in (cases.cases_key, cases.index_key, cases.state_key):
        assert 0 < redis_client.ttl(key) <= 3600


def test_the_size_bound_evicts_the_oldest_arrivals_and_keeps_counts_right(
    redis_client: redis.Redis[bytes], redis_namespace: str
) -> None:
    cases = store(redis_client, redis_namespace, max_cases=100)
    cases.add_cases([case(f"s{i}", suspicious=True) for i in range(30)])
    cases.add_cases([case(f"l{i}") for i in range(90)])
    kept = cases.load_cases()
    assert len(kept) == 100
    assert {c.event_id for _, c in kept} == {f"s{i}" for i in range(20, 30)} | {
        f"l{i}" for i in range(90)
    }
    state = cases.state()
    assert (state.suspicious, state.legitimate, state.seq) == (10, 90, 120)
    assert redis_client.hlen(cases.cases_key) == 100


def test_clock_outcomes_and_unjoined_labels(
    redis_client: redis.Redis[bytes], redis_namespace: str
) -> None:
    cases = store(redis_client, redis_namespace)
    cases.advance_clock(2000)
    cases.advance_clock(1000)  # labels arrive out of order: the clock never goes back
    cases.count_outcome(JoinOutcome.UNKNOWN, 2)
    cases.count_outcome(JoinOutcome.JOINED)
    state = cases.state()
    assert state.clock_ms == 2000
    assert state.outcomes == {"unknown": 2, "joined": 1}

    assert all(cases.keep_unjoined(label(f"e{i}"), now_ms=5) for i in range(3))
    assert not cases.keep_unjoined(label("e9"), now_ms=5)  # bound of 3 reached
    pending = cases.unjoined()
    assert sorted(p.label.event_id for p in pending) == ["e0", "e1", "e2"]
    assert pending[0].first_seen_ms == 5
    cases.forget_unjoined(["analyst-e0", "analyst-e1"])
    assert [p.label.event_id for p in cases.unjoined()] == ["e2"]


def test_the_record_sampler_sees_only_its_namespace_within_budget(
    redis_client: redis.Redis[bytes], redis_namespace: str
) -> None:
    records = ScoredRecordStore(redis_client, redis_namespace, 3600)
    records.put_batch([record(f"e{i}") for i in range(300)])
    other = ScoredRecordStore(redis_client, redis_namespace + "x", 3600)
    other.put_batch([record("other")])
    try:
        everything = RecordSampler(redis_client, redis_namespace, 10_000).sample(1000)
        assert sorted(r.event_id for r in everything) == sorted(f"e{i}" for i in range(300))
        some = RecordSampler(redis_client, redis_namespace, 10_000).sample(50, seed=1)
        assert len(some) == 50
        assert len({r.event_id for r in some}) == 50
        budgeted = RecordSampler(redis_client, redis_namespace, 1000).sample(1000)
        assert len(budgeted) == 300
    finally:
        redis_client.delete(f"{redis_namespace}x:{{e:other}}:scored")


def test_ingestion_joins_persists_and_accounts_for_every_label(
    redis_client: redis.Redis[bytes], redis_namespace: str
) -> None:
    now = [T0.timestamp()]
    context = ContextStore(
        redis_client, ContextSettings(namespace=redis_namespace), create_namespace=True
    )
    records = ScoredRecordStore(redis_client, redis_namespace, 90 * 86_400)
    cases = store(redis_client, redis_namespace)
    metrics = TrainerMetrics()
    ingestor = LabelIngestor(
        context=context,
        records=records,
        cases=cases,
        metrics=metrics,
        scored_ttl_s=90 * 86_400,
        unjoined_keep_s=3600,
        clock=lambda: now[0],
    )
    records.put_batch([record("e1", alerted=True), record("e2")])

    assert ingestor.ingest(label("e1")) is JoinOutcome.JOINED
    assert ingestor.ingest(label("e1")) is JoinOutcome.DUPLICATE  # a redelivery
    chargeback = label("e2", source=LabelSource.CHARGEBACK, after=timedelta(days=30))
    assert ingestor.ingest(chargeback) is JoinOutcome.JOINED
    assert ingestor.ingest(label("gone", after=timedelta(days=91))) is JoinOutcome.EXPIRED
    assert ingestor.ingest(label("e1", customer_id="cust-9", label_id="x")) is (
        JoinOutcome.MISMATCHED
    )
    assert ingestor.ingest(label("late")) is JoinOutcome.UNKNOWN
    assert ingestor.ingest(label("never")) is JoinOutcome.UNKNOWN

    # the label-derived counterparty risk got every fraud label, joined or not
    again = context.apply_labels([label("e1"), chargeback, label("gone", after=timedelta(days=91))])
    assert again.duplicates == 3

    # the scorer catches up with one event; the other is given up on after the keep time
    records.put_batch([record("late")])
    retry = ingestor.retry_unjoined()
    assert (retry.joined_late, retry.abandoned, retry.waiting) == (1, 0, 1)
    now[0] += 3601
    assert ingestor.retry_unjoined().abandoned == 1
    assert cases.unjoined() == []

    state = cases.state()
    assert state.outcomes == {
        "joined": 2, "duplicate": 1, "expired": 1, "mismatched": 1, "unknown": 2,
        "joined_late": 1, "abandoned": 1,
    }  # fmt: skip
    assert sorted(c.event_id for _, c in cases.load_cases()) == ["e1", "e2", "late"]
    assert state.clock_ms == int((T0 + timedelta(days=91)).timestamp() * 1000)
    assert state.clock_ms - int(T0.timestamp() * 1000) == 91 * DAY_MS
