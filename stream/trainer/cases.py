"""Labelled cases: what a fine-tune learns from, as pure functions of data.

A *case* is a label joined with what the scorer scored for its event (the event, narrative,
clause ids and feature vector, kept by ``stream.pipeline.records``). This module decides:

* how a label joins (:func:`join_labels`): joined, or why not - the record expired (the label
  came after ``scorer.scored_ttl_days``), it is unknown (never scored, or not yet), or it
  belongs to another customer (a wrong event id must not teach the model anything);
* what one event is when several labels speak about it (:func:`resolve_by_event`);
* which older cases are replayed beside the new ones (:func:`replay_sample`);
* which unlabelled scored events may stand in as legitimate (:func:`presumed_negatives`);
* which labelled events are old enough for their labels to be complete (:func:`labels_complete`);
* how cases split in time into train / validation / holdout (:func:`split_by_time`).

No Redis, Kafka or torch here; ``store`` persists cases and ``finetune`` trains on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final

import numpy as np
import orjson

from schemas import LabelEvent, LabelSource, Typology
from stream.pipeline.records import ScoredRecord

SCHEMA: Final = 1
PRESUMED: Final = "presumed"
"""`source` of a presumed-legitimate case (an old, unlabelled, unalerted scored event)."""

# Which label says the last word on an event: an investigation outranks a chargeback or a
# customer's fraud report, which outrank an analyst's first look at an alert. Within a rank the
# latest label wins.
_SOURCE_RANK: Final = {
    PRESUMED: 0,
    LabelSource.ANALYST.value: 1,
    LabelSource.CHARGEBACK.value: 2,
    LabelSource.FRAUD_REPORT.value: 2,
    LabelSource.CONFIRMED_CASE.value: 3,
}


class JoinOutcome(StrEnum):
    JOINED = "joined"
    DUPLICATE = "duplicate"
    """Joined, but this label id was stored before (a redelivery)."""
    EXPIRED = "expired"
    """No scored record, and the label came after records expire: it can never join."""
    UNKNOWN = "unknown"
    """No scored record (yet): never scored, dead-lettered, or the scorer is behind."""
    MISMATCHED = "mismatched"
    """The record belongs to another customer: the label names the wrong event."""
    INVALID = "invalid"
    """Not a valid LabelEvent (sent to the dead-letter topic)."""
    JOINED_LATE = "joined_late"
    """An earlier ``unknown`` label whose record appeared later (a retry joined it)."""
    ABANDONED = "abandoned"
    """An earlier ``unknown`` label that stayed unjoinable for ``trainer.unjoined_keep_hours``."""


@dataclass(frozen=True, slots=True)
class LabelledCase:
    """One label joined with its scored record: everything a fine-tune needs about the event."""

    label_id: str
    event_id: str
    customer_id: str
    source: str
    """A LabelSource value, or ``presumed``."""
    is_suspicious: bool
    typology: str
    event_time_ms: int
    label_time_ms: int
    event: dict[str, Any]
    narrative: str
    narrative_version: str
    clause_ids: tuple[str, ...]
    features: tuple[float, ...]
    score: float
    """What the model that scored it live said (drift and reports only; never a target)."""
    model_version: str
    alerted: bool
    story: str = ""
    """The story behind the narrative, as the scored record kept it (hex)."""

    def to_bytes(self) -> bytes:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return orjson.dumps({"v": SCHEMA, **data})

    @classmethod
    def from_bytes(cls, raw: bytes) -> LabelledCase:
        data = orjson.loads(raw)
        data.pop("v", None)
        data["clause_ids"] = tuple(data["clause_ids"])
        data["features"] = tuple(data["features"])
        return cls(**data)

    @property
    def target(self) -> Typology:
        return Typology(self.typology)


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


def case_from(label: LabelEvent, record: ScoredRecord) -> LabelledCase:
    return LabelledCase(
        label_id=label.label_id,
        event_id=label.event_id,
        customer_id=record.customer_id,
        source=label.source.value,
        is_suspicious=label.is_suspicious,
        typology=label.typology.value,
        event_time_ms=record.event_time_ms,
        label_time_ms=_ms(label.label_time),
        event=record.event,
        narrative=record.narrative,
        narrative_version=record.narrative_version,
        clause_ids=record.clause_ids,
        features=record.features,
        score=record.score,
        model_version=record.model_version,
        alerted=record.alert_id is not None,
        story=record.story,
    )


@dataclass
class JoinResult:
    cases: list[LabelledCase] = field(default_factory=list)
    expired: list[LabelEvent] = field(default_factory=list)
    unknown: list[LabelEvent] = field(default_factory=list)
    mismatched: list[LabelEvent] = field(default_factory=list)


def join_labels(
    labels: Sequence[LabelEvent], records: Sequence[ScoredRecord | None], scored_ttl_ms: int
) -> JoinResult:
    """Pair each label with its record (``records[i]`` is label i's, None when missing).

    A missing record is *expired* when the label came at least ``scored_ttl_ms`` after its
    event (the record, written when the event was scored, is gone for good), else *unknown*:
    the caller keeps those and tries again, because the scorer may simply not have got there."""
    result = JoinResult()
    for label, record in zip(labels, records, strict=True):
        if record is None:
            waited_ms = _ms(label.label_time) - _ms(label.event_time)
            (result.expired if waited_ms >= scored_ttl_ms else result.unknown).append(label)
        elif record.customer_id != label.customer_id:
            result.mismatched.append(label)
        else:
            result.cases.append(case_from(label, record))
    return result


def resolve_by_event(cases: Iterable[LabelledCase]) -> list[LabelledCase]:
    """One case per event: the label of the highest-ranked source, the latest within a rank
    (an analyst's "false positive" followed by a chargeback is fraud). Sorted by event time."""
    best: dict[str, LabelledCase] = {}
    for case in cases:
        current = best.get(case.event_id)
        if current is None or _precedence(case) > _precedence(current):
            best[case.event_id] = case
    return sorted(best.values(), key=lambda c: (c.event_time_ms, c.event_id))


def _precedence(case: LabelledCase) -> tuple[int, int, str]:
    return (_SOURCE_RANK.get(case.source, 1), case.label_time_ms, case.label_id)


def class_counts(cases: Iterable[LabelledCase]) -> tuple[int, int]:
    """(suspicious, legitimate) cases."""
    suspicious = legitimate = 0
    for case in cases:
        if case.is_suspicious:
            suspicious += 1
        else:
            legitimate += 1
    return suspicious, legitimate


def replay_sample(older: Sequence[LabelledCase], size: int, seed: int) -> list[LabelledCase]:
    """At most ``size`` of the ``older`` cases, replayed beside the new ones so a fine-tune does
    not forget what it knew.

    Suspicious cases are rare and each typology matters, so they are kept first - all of them
    when they fit in half the buffer, else a uniform half of the buffer - and legitimate ones
    fill the rest uniformly. Deterministic for a seed, whatever order ``older`` came in."""
    if len(older) <= size:
        return sorted(older, key=lambda c: c.label_id)
    rng = np.random.default_rng(seed)
    ordered = sorted(older, key=lambda c: c.label_id)
    suspicious = [c for c in ordered if c.is_suspicious]
    legitimate = [c for c in ordered if not c.is_suspicious]
    keep_suspicious = min(len(suspicious), max(size // 2, size - len(legitimate)))
    keep_legitimate = min(len(legitimate), size - keep_suspicious)
    chosen = [suspicious[i] for i in sorted(rng.permutation(len(suspicious))[:keep_suspicious])]
    chosen += [legitimate[i] for i in sorted(rng.permutation(len(legitimate))[:keep_legitimate])]
    return chosen


def presumed_negatives(
    records: Iterable[ScoredRecord],
    labelled_event_ids: set[str],
    *,
    clock_ms: int,
    maturity_ms: int,
    limit: int,
    seed: int,
) -> list[LabelledCase]:
    """Scored events taken as legitimate because time has passed without a label.

    Analysts label only alerted events and chargebacks are nearly all fraud, so without these
    a fine-tune would see almost no ordinary traffic. An event qualifies when it is older than
    ``maturity_ms`` at ``clock_ms`` (the newest label time: the stream's clock, not the wall
    clock, so replays and simulations behave as live traffic does), has no label, and was not
    alerted (an alert nobody has dispositioned yet is not evidence of anything). Fraud whose
    chargeback is still to come slips in as "legitimate": the bias is documented in
    docs/feedback-loop.md and shrinks as the maturity window grows."""
    eligible = sorted(
        (
            r
            for r in records
            if r.event_id not in labelled_event_ids
            and r.alert_id is None
            and r.event_time_ms <= clock_ms - maturity_ms
        ),
        key=lambda r: r.event_id,
    )
    if len(eligible) > limit:
        rng = np.random.default_rng(seed)
        eligible = [eligible[i] for i in sorted(rng.permutation(len(eligible))[:limit])]
    return [
        LabelledCase(
            label_id=f"{PRESUMED}-{r.event_id}",
            event_id=r.event_id,
            customer_id=r.customer_id,
            source=PRESUMED,
            is_suspicious=False,
            typology=Typology.LEGITIMATE.value,
            event_time_ms=r.event_time_ms,
            label_time_ms=clock_ms,
            event=r.event,
            narrative=r.narrative,
            narrative_version=r.narrative_version,
            clause_ids=r.clause_ids,
            features=r.features,
            score=r.score,
            model_version=r.model_version,
            alerted=False,
            story=r.story,
        )
        for r in eligible
    ]


def labels_complete(
    cases: Iterable[LabelledCase], *, clock_ms: int, maturity_ms: int
) -> tuple[list[LabelledCase], list[LabelledCase]]:
    """(complete, waiting): cases whose event is at least ``maturity_ms`` old at ``clock_ms``,
    and the younger ones.

    Only for the older events is the labelling *complete*: every fraud among them has had time
    to be charged back or confirmed, whether the champion alerted it or not. Among younger
    events the labels that have already arrived are mostly analysts' dispositions of the
    champion's own alerts (a day) rather than chargebacks of what it missed (days to weeks),
    so a holdout that includes them is stacked in the champion's favour - and it has no
    presumed negatives there either (they obey the same maturity). A cycle therefore splits
    only the complete cases; the waiting ones join a later cycle once they have matured."""
    horizon = clock_ms - maturity_ms
    complete: list[LabelledCase] = []
    waiting: list[LabelledCase] = []
    for c in cases:
        (complete if c.event_time_ms <= horizon else waiting).append(c)
    return complete, waiting


def composition(cases: Iterable[LabelledCase]) -> dict[str, Any]:
    """What a part of the split is made of (for reports): suspicious cases by label source and
    by typology, and how many of them the live model had alerted."""
    by_source: dict[str, int] = {}
    by_typology: dict[str, int] = {}
    alerted = legitimate = 0
    for c in cases:
        if not c.is_suspicious:
            legitimate += 1
            continue
        by_source[c.source] = by_source.get(c.source, 0) + 1
        by_typology[c.typology] = by_typology.get(c.typology, 0) + 1
        alerted += c.alerted
    return {
        "suspicious_by_source": dict(sorted(by_source.items())),
        "suspicious_by_typology": dict(sorted(by_typology.items())),
        "suspicious_alerted": alerted,
        "legitimate": legitimate,
    }


@dataclass(frozen=True)
class CaseSplit:
    """Cases split by event time: within each group (a typology's suspicious cases, or the
    legitimate ones), train < validation < holdout."""

    train: list[LabelledCase]
    validation: list[LabelledCase]
    holdout: list[LabelledCase]
    validation_start_ms: int
    """Where the legitimate cases' validation part begins."""
    holdout_start_ms: int
    """Where the legitimate cases' holdout begins."""
    holdout_starts: dict[str, int] = field(default_factory=dict)
    """Per group (:func:`split_group`): events at or after this time are not trained on."""


def split_group(case: LabelledCase) -> str:
    """The group a case is split in: its typology if suspicious, else ``legitimate``."""
    return case.typology if case.is_suspicious else Typology.LEGITIMATE.value


def _cut_times(
    times: Sequence[int], holdout_share: float, validation_share: float
) -> tuple[int, int]:
    """(validation start, holdout start) over sorted pivot times: the latest ``holdout_share``
    of them are held out, the ``validation_share`` before validate. No pivot held out gives a
    start after the last one."""
    m = len(times)
    held = round(m * holdout_share)
    validating = round(m * (holdout_share + validation_share)) - held
    after_last = times[-1] + 1
    holdout_ms = times[m - held] if held else after_last
    validation_ms = times[m - held - validating] if validating else holdout_ms
    return validation_ms, holdout_ms


def split_by_time(
    cases: Sequence[LabelledCase], holdout_share: float, validation_share: float
) -> CaseSplit:
    """Split by event time, *per typology*: the holdout the promotion is decided on holds the
    latest ``holdout_share`` of each typology's suspicious cases, the validation part (early
    stopping, thresholds) the ``validation_share`` before them, and the rest may train.
    Legitimate cases are cut at the times the same shares give over all suspicious cases
    (all cases when none is suspicious).

    Why per typology: fraud comes in bursts, typology by typology. The latest quarter of all
    fraud holds only the typologies active lately, so a challenger that learned a new typology
    from an earlier burst could not be credited for it, and one that forgot a typology not
    seen lately could not be caught forgetting it (see docs/feedback-loop.md, "One cycle",
    step 2). Within a
    typology, time order holds: a challenger is judged on each typology's cases after
    everything it learned of that typology. Shares count suspicious cases because they are the
    scarce class; cases of one group at the same millisecond never straddle a cut; a typology
    with too few cases to hold one out (round(m × share) = 0) only trains."""
    if holdout_share + validation_share >= 1.0:
        raise ValueError("holdout_share + validation_share must leave cases to train on")
    ordered = sorted(cases, key=lambda c: (c.event_time_ms, c.event_id))
    if not ordered:
        return CaseSplit([], [], [], 0, 0)
    suspicious_times = [c.event_time_ms for c in ordered if c.is_suspicious]
    legitimate_cut = _cut_times(
        suspicious_times or [c.event_time_ms for c in ordered], holdout_share, validation_share
    )
    cuts = {Typology.LEGITIMATE.value: legitimate_cut}
    by_typology: dict[str, list[int]] = {}
    for c in ordered:
        if c.is_suspicious:
            by_typology.setdefault(c.typology, []).append(c.event_time_ms)
    for typology, times in by_typology.items():
        cuts[typology] = _cut_times(times, holdout_share, validation_share)
    train: list[LabelledCase] = []
    validation: list[LabelledCase] = []
    holdout: list[LabelledCase] = []
    for c in ordered:
        validation_ms, holdout_ms = cuts[split_group(c)]
        if c.event_time_ms >= holdout_ms:
            holdout.append(c)
        elif c.event_time_ms >= validation_ms:
            validation.append(c)
        else:
            train.append(c)
    return CaseSplit(
        train=train,
        validation=validation,
        holdout=holdout,
        validation_start_ms=legitimate_cut[0],
        holdout_start_ms=legitimate_cut[1],
        holdout_starts={group: cut[1] for group, cut in cuts.items()},
    )


def since(cases: Sequence[LabelledCase], starts: Mapping[str, int]) -> list[LabelledCase]:
    """Cases a challenger split with ``starts`` (``CaseSplit.holdout_starts``) never trained
    on: at or after its group's holdout start; every case of a group it never saw (the shadow
    re-check judges it on these)."""
    return [c for c in cases if c.event_time_ms >= starts.get(split_group(c), 0)]
