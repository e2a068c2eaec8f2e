"""What each event is, for training and evaluation, when the truth is only partly known.

A simulator writes the complete truth (``truth.jsonl``). A bank has labels: chargebacks and
confirmed cases for some frauds, an analyst's verdict on some alerts, weeks after the events,
and nothing at all for most events. From labels, an event's target is:

* its label, when it has one - when several speak about it, the highest-ranked source wins
  (a confirmed case over a chargeback over an analyst's first look), the latest within a
  rank; the feedback-loop trainer resolves labels the same way
  (``stream.trainer.cases.resolve_by_event``, pinned by a test);
* *legitimate*, when it has none and is mature: older than the label maturity at the clock
  (``models.maturity``), so any fraud among such events would most likely have been labelled;
* *unknown*, otherwise: left out of training and evaluation.

Labelled events younger than the maturity are left out too, as the trainer's
``labels_complete`` does: among young events the labels already in are mostly the quick ones
(analysts' dispositions of alerts), not yet the chargebacks of what was missed, so keeping
them would skew the recent days' mix - which are the days a model is tested on.

Only labels known at the clock count (``label_time <= clock``). The clock is the newest moment
the data knows of: its newest event or label time, unless the caller names one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from models.maturity import observed_label_delay_days
from schemas import LabelEvent, LabelSource, Typology
from schemas.common import format_utc

SOURCE_RANK: Final[dict[LabelSource, int]] = {
    LabelSource.ANALYST: 1,
    LabelSource.CHARGEBACK: 2,
    LabelSource.CONFIRMED_CASE: 3,
}


def resolve_labels(labels: Iterable[LabelEvent]) -> dict[str, LabelEvent]:
    """One label per event id: the highest-ranked source, then the latest label time, then
    the largest label id (so the choice never depends on input order)."""
    best: dict[str, LabelEvent] = {}
    for label in labels:
        current = best.get(label.event_id)
        if current is None or _precedence(label) > _precedence(current):
            best[label.event_id] = label
    return best


def _precedence(label: LabelEvent) -> tuple[int, datetime, str]:
    return (SOURCE_RANK[label.source], label.label_time, label.label_id)


@dataclass(frozen=True)
class LabelTargets:
    """Targets of a sequence of events from their labels; None: left out."""

    typologies: list[Typology | None]
    clock: datetime
    maturity_days: float
    maturity_source: str
    """How the maturity was chosen, in words (for the dataset's report)."""
    labelled_suspicious: int
    labelled_legitimate: int
    presumed_legitimate: int
    young: int
    """Events younger than the maturity (labelled or not): left out."""
    labels_unmatched: int
    """Labels (known at the clock) whose event is not among the events."""

    def summary(self) -> dict[str, object]:
        return {
            "targets": "labels",
            "clock": format_utc(self.clock),
            "maturity_days": self.maturity_days,
            "maturity_source": self.maturity_source,
            "labelled_suspicious": self.labelled_suspicious,
            "labelled_legitimate": self.labelled_legitimate,
            "presumed_legitimate": self.presumed_legitimate,
            "left_out_young": self.young,
            "labels_unmatched": self.labels_unmatched,
        }


def estimate_maturity(labels: Sequence[LabelEvent]) -> tuple[float, str]:
    """(days, how) from the delays of the suspicious labels; all labels when none is
    suspicious. Raises ValueError when there are no labels at all."""
    suspicious = [label for label in labels if label.is_suspicious]
    chosen = suspicious or list(labels)
    delays = [(label.label_time - label.event_time) / timedelta(days=1) for label in chosen]
    days = observed_label_delay_days(delays)
    kind = "suspicious labels'" if suspicious else "labels'"
    return days, f"the 90th percentile of {len(chosen):,} {kind} delays, rounded up"


def label_targets(
    event_ids: Sequence[str],
    event_times: Sequence[datetime],
    labels: Sequence[LabelEvent],
    *,
    maturity_days: float | None = None,
    maturity_source: str = "given",
    clock: datetime | None = None,
) -> LabelTargets:
    """The target of every event (see the module docstring). ``maturity_days`` None:
    estimated from the labels (:func:`estimate_maturity`); otherwise ``maturity_source``
    says where it came from."""
    if len(event_ids) != len(event_times):
        raise ValueError("one event time per event id")
    if clock is None:
        moments = [*event_times, *(label.label_time for label in labels)]
        if not moments:
            raise ValueError("no events and no labels: nothing to take a clock from")
        clock = max(moments)
    known = [label for label in labels if label.label_time <= clock]
    if maturity_days is None:
        if not known:
            raise ValueError("no labels to estimate the label maturity from: give it explicitly")
        maturity_days, maturity_source = estimate_maturity(known)
    horizon = clock - timedelta(days=maturity_days)
    resolved = resolve_labels(known)
    present = set(event_ids)
    typologies: list[Typology | None] = []
    suspicious = legitimate = presumed = young = 0
    for event_id, event_time in zip(event_ids, event_times, strict=True):
        if event_time > horizon:
            typologies.append(None)
            young += 1
            continue
        label = resolved.get(event_id)
        if label is None:
            typologies.append(Typology.LEGITIMATE)
            presumed += 1
        elif label.is_suspicious:
            typologies.append(label.typology)
            suspicious += 1
        else:
            typologies.append(Typology.LEGITIMATE)
            legitimate += 1
    return LabelTargets(
        typologies=typologies,
        clock=clock,
        maturity_days=maturity_days,
        maturity_source=maturity_source,
        labelled_suspicious=suspicious,
        labelled_legitimate=legitimate,
        presumed_legitimate=presumed,
        young=young,
        labels_unmatched=sum(1 for event_id in resolved if event_id not in present),
    )
