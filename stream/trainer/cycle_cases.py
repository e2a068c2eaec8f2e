"""The cases one feedback cycle works with: read from Redis (labelled cases, presumed
negatives, a sample of recent traffic), split by time, and the training cases picked.

The rules themselves are pure and live in :mod:`stream.trainer.cases`; this module applies
them to what the trainer stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stream.pipeline.records import ScoredRecord
from stream.redis_client import connect
from stream.settings import Settings, TrainerSettings
from stream.trainer.cases import (
    CaseSplit,
    LabelledCase,
    class_counts,
    composition,
    labels_complete,
    presumed_negatives,
    replay_sample,
    resolve_by_event,
    split_by_time,
)
from stream.trainer.store import MAX_UNJOINED, CaseStore, RecordSampler


@dataclass
class CaseData:
    """What a cycle reads from Redis."""

    labelled: list[LabelledCase]
    """One case per labelled event (resolved)."""
    seq_by_label: dict[str, int]
    negatives: list[LabelledCase]
    traffic: list[ScoredRecord]
    """A random sample of recent scored events (thresholds, drift reference)."""
    seq: int
    finetune_seq: int
    clock_ms: int
    """The stream clock (newest label time) the presumed negatives were aged against."""


def read_cases(settings: Settings) -> CaseData:
    ts = settings.trainer
    client = connect(settings.redis)
    try:
        store = CaseStore(
            client,
            settings.context.namespace,
            max_cases=ts.max_cases,
            ttl_s=ts.cases_ttl_days * 86_400,
            max_unjoined=MAX_UNJOINED,
        )
        state = store.state()
        stored = store.load_cases()
        sample = RecordSampler(client, settings.context.namespace, ts.records_scan_budget).sample(
            2 * ts.max_presumed_negatives + ts.drift_sample_size, seed=ts.finetune_seed
        )
    finally:
        client.close()
    labelled = resolve_by_event(case for _, case in stored)
    labelled_ids = {c.event_id for c in labelled}
    clock_ms = state.clock_ms or max((r.event_time_ms for r in sample), default=0)
    negatives = presumed_negatives(
        sample,
        labelled_ids,
        clock_ms=clock_ms,
        maturity_ms=int(ts.negative_maturity_days * 86_400_000),
        limit=ts.max_presumed_negatives,
        seed=ts.finetune_seed,
    )
    newest = max((r.event_time_ms for r in sample), default=0)
    recent = [r for r in sample if r.event_time_ms >= newest - ts.drift_window_hours * 3_600_000]
    return CaseData(
        labelled=labelled,
        seq_by_label={case.label_id: seq for seq, case in stored},
        negatives=negatives,
        traffic=recent[: ts.drift_sample_size],
        seq=state.seq,
        finetune_seq=state.finetune_seq,
        clock_ms=clock_ms,
    )


def check_split(split: CaseSplit, settings: TrainerSettings) -> str | None:
    """Why this split cannot support a fine-tune and a fair decision, or None."""
    held_s, held_l = class_counts(split.holdout)
    if min(held_s, held_l) < settings.min_holdout_per_class:
        return (
            f"holdout holds {held_s} suspicious / {held_l} legitimate cases; "
            f"min_holdout_per_class is {settings.min_holdout_per_class}"
        )
    val_s, val_l = class_counts(split.validation)
    if val_s == 0 or val_l == 0:
        return f"validation holds {val_s} suspicious / {val_l} legitimate cases: needs both"
    train_s, train_l = class_counts(split.train)
    if train_s == 0 or train_l == 0:
        return f"train holds {train_s} suspicious / {train_l} legitimate cases: needs both"
    return None


@dataclass
class CasePlan:
    """Which cases a fine-tune trains on, and the split it is judged with."""

    split: CaseSplit
    train_cases: list[LabelledCase]
    """New train-period cases plus the replayed older ones, in event-time order."""
    problem: str | None
    """Why the split cannot support a fine-tune and a fair decision (see :func:`check_split`)."""


def plan_cases(data: CaseData, ts: TrainerSettings, counts: dict[str, Any]) -> CasePlan:
    """Split the cases whose labels are complete by time, and pick the training cases: those
    that arrived since the last fine-tune plus a replay of older ones. What was used is added
    to ``counts`` (the report's data)."""
    # Only events whose labels are complete are split (see ``labels_complete``): the same
    # maturity the presumed negatives obey, so holdout positives are not mostly the
    # champion's own quickly-dispositioned alerts. Younger labelled events wait.
    complete, waiting = labels_complete(
        data.labelled,
        clock_ms=data.clock_ms,
        maturity_ms=int(ts.negative_maturity_days * 86_400_000),
    )
    split = split_by_time(complete + data.negatives, ts.holdout_share, ts.validation_share)
    problem = check_split(split, ts)
    new = [
        c for c in split.train if data.seq_by_label.get(c.label_id, data.seq) > data.finetune_seq
    ]
    older = [
        c for c in split.train if data.seq_by_label.get(c.label_id, data.seq) <= data.finetune_seq
    ]
    replay = replay_sample(older, ts.replay_buffer_size, ts.finetune_seed)
    train_cases = sorted(new + replay, key=lambda c: (c.event_time_ms, c.event_id))
    counts.update(
        presumed_negatives=len(data.negatives),
        labelled_waiting=len(waiting),
        train_new=len(new),
        train_replay=len(replay),
        validation=len(split.validation),
        holdout=len(split.holdout),
        holdout_suspicious=class_counts(split.holdout)[0],
        traffic_sample=len(data.traffic),
        holdout_start=datetime.fromtimestamp(split.holdout_start_ms / 1000, UTC).isoformat(),
        train_composition=composition(train_cases),
        holdout_composition=composition(split.holdout),
    )
    return CasePlan(split=split, train_cases=train_cases, problem=problem)
