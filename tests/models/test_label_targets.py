"""Targets from labels: the maturity estimate, the label each event gets, and the date split.
Pure functions of data, checked against hand computations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from models.errors import DatasetError
from models.examples import split_by_dates, split_by_day
from models.maturity import MAX_MATURITY_DAYS, observed_label_delay_days
from models.targets import estimate_maturity, label_targets, resolve_labels
from schemas import LabelEvent, LabelSource, Typology
from stream.trainer.cases import LabelledCase, resolve_by_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def label(
    event_id: str,
    event_day: float,
    label_day: float,
    typology: Typology = Typology.STOLEN_CARD,
    source: LabelSource = LabelSource.CHARGEBACK,
    label_id: str | None = None,
) -> LabelEvent:
    return LabelEvent(
        label_id=label_id or f"lb-{event_id}-{source.value}-{label_day}",
        event_id=event_id,
        customer_id="c1",
        event_time=T0 + timedelta(days=event_day),
        label_time=T0 + timedelta(days=label_day),
        source=source,
        is_suspicious=typology is not Typology.LEGITIMATE,
        typology=typology,
    )


def test_observed_label_delay_days() -> None:
    delays = [0.5, 3.0, 10.2, 20.0, 21.0, 25.0, 26.0, 28.0, 30.1, 90.0]
    # the 90th percentile, taken as an observed delay (no interpolation), rounded up
    assert observed_label_delay_days(delays) == 31.0
    assert observed_label_delay_days(delays, quantile=0.5) == 21.0
    assert observed_label_delay_days([0.01, 0.2]) == 1.0  # at least a day
    assert observed_label_delay_days([400.0]) == MAX_MATURITY_DAYS
    assert observed_label_delay_days([400.0], max_days=30) == 30.0
    for bad in ([], [-1.0], [float("nan")]):
        with pytest.raises(ValueError, match=r"label delays|no label"):
            observed_label_delay_days(bad)
    with pytest.raises(ValueError, match="quantile"):
        observed_label_delay_days([1.0], quantile=0)


def test_labels_resolve_as_the_feedback_loop_trainer_resolves_them() -> None:
    labels = [
        label("a", 0, 1, Typology.LEGITIMATE, LabelSource.ANALYST),
        label("a", 0, 30, Typology.STOLEN_CARD, LabelSource.CHARGEBACK),  # outranks the analyst
        label("b", 0, 40, Typology.STRUCTURING, LabelSource.CONFIRMED_CASE),
        label("b", 0, 50, Typology.LEGITIMATE, LabelSource.CHARGEBACK),  # later, lower rank
        label("c", 0, 5, Typology.LEGITIMATE, LabelSource.ANALYST),
        label("c", 0, 6, Typology.CARD_TESTING, LabelSource.ANALYST),  # same rank: latest
        label("d", 0, 6, Typology.CARD_TESTING, LabelSource.ANALYST, "lb-1"),
        label("d", 0, 6, Typology.LEGITIMATE, LabelSource.ANALYST, "lb-2"),  # tie: largest id
    ]
    ours = resolve_labels(reversed(labels))
    trainers = resolve_by_event(
        LabelledCase(
            label_id=lb.label_id,
            event_id=lb.event_id,
            customer_id=lb.customer_id,
            source=lb.source.value,
            is_suspicious=lb.is_suspicious,
            typology=lb.typology.value,
            event_time_ms=int(lb.event_time.timestamp() * 1000),
            label_time_ms=int(lb.label_time.timestamp() * 1000),
            event={},
            narrative="",
            narrative_version="",
            clause_ids=(),
            features=(),
            score=0.0,
            model_version="",
            alerted=False,
        )
        for lb in labels
    )
    assert {c.event_id: c.label_id for c in trainers} == {k: v.label_id for k, v in ours.items()}
    assert ours["a"].typology is Typology.STOLEN_CARD
    assert ours["b"].typology is Typology.STRUCTURING
    assert ours["c"].typology is Typology.CARD_TESTING
    assert ours["d"].label_id == "lb-2"


def test_label_targets_mature_presumed_and_young() -> None:
    # events on days 0..9; the clock is day 10; maturity 3 days: days 0..7 are mature
    ids = [f"e{d}" for d in range(10)]
    times = [T0 + timedelta(days=d) for d in range(10)]
    labels = [
        label("e1", 1, 4),
        label("e2", 2, 3, Typology.LEGITIMATE, LabelSource.ANALYST),
        label("e9", 9, 9.5),  # young, labelled: still left out
        label("e5", 5, 11),  # known only after the clock: does not count
        label("zz", 3, 5),  # an event not in the data
    ]
    targets = label_targets(ids, times, labels, maturity_days=3.0, clock=T0 + timedelta(days=10))
    assert targets.typologies == [
        Typology.LEGITIMATE,
        Typology.STOLEN_CARD,
        Typology.LEGITIMATE,
        Typology.LEGITIMATE,
        Typology.LEGITIMATE,
        Typology.LEGITIMATE,  # e5's label came after the clock
        Typology.LEGITIMATE,
        Typology.LEGITIMATE,  # day 7: exactly at the horizon, mature (as in the trainer)
        None,
        None,
    ]
    assert (targets.labelled_suspicious, targets.labelled_legitimate) == (1, 1)
    assert (targets.presumed_legitimate, targets.young, targets.labels_unmatched) == (6, 2, 1)


def test_the_default_clock_and_estimated_maturity() -> None:
    ids = [f"e{d}" for d in range(60)]
    times = [T0 + timedelta(days=d) for d in range(60)]
    labels = [label(f"e{d}", d, d + 10 + d % 5) for d in range(0, 40, 4)]
    labels.append(label("e1", 1, 1.1, Typology.LEGITIMATE, LabelSource.ANALYST))
    days, how = estimate_maturity(labels)
    assert days == 14.0  # suspicious delays 10..14: the 90th percentile, ignoring the analyst
    assert how == "the 90th percentile of 10 suspicious labels' delays, rounded up"
    targets = label_targets(ids, times, labels)
    assert targets.clock == T0 + timedelta(days=59)  # the newest event (labels end earlier)
    assert targets.maturity_days == 14.0
    assert targets.young == 14
    with pytest.raises(ValueError, match="no labels"):
        label_targets(ids, times, [])


def test_split_by_dates_half_open_with_a_gap() -> None:
    days = [date(2026, 1, 1) + timedelta(days=d) for d in range(10) for _ in range(2)]
    parts = split_by_dates(days, date(2026, 1, 5), date(2026, 1, 8), gap_days=1)
    picked = {name: sorted({days[i].day for i in rows}) for name, rows in parts.items()}
    assert picked == {"train": [1, 2, 3, 4], "validation": [6, 7], "test": [9, 10]}
    parts = split_by_dates(days, date(2026, 1, 5), date(2026, 1, 8), date(2026, 1, 10))
    assert sorted({days[i].day for i in parts["test"]}) == [8, 9]
    with pytest.raises(DatasetError, match="must come before"):
        split_by_dates(days, date(2026, 1, 8), date(2026, 1, 8))
    # fractions with a gap: 10 days -> 6 train, 2 validation, 2 test, a day dropped after each
    by_fraction = split_by_day(days, (0.6, 0.2), gap_days=1)
    assert [
        len(np.unique(np.array(days)[by_fraction[n]])) for n in ("train", "validation", "test")
    ] == [6, 1, 1]
