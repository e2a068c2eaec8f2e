"""Pure case rules: joining labels, one verdict per event, the replay buffer, presumed
negatives and the time split."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from stream.trainer.cases import (
    PRESUMED,
    LabelledCase,
    class_counts,
    composition,
    join_labels,
    labels_complete,
    presumed_negatives,
    replay_sample,
    resolve_by_event,
    since,
    split_by_time,
)

from .conftest import DAY_MS, T0, case, label, ms, record


def test_join_pairs_each_label_with_its_record_and_explains_the_rest() -> None:
    labels = [
        label("e1"),
        label("e2", after=timedelta(days=100)),  # past the 90-day record TTL
        label("e3", after=timedelta(days=2)),  # not scored (yet)
        label("e4", customer_id="cust-2"),  # names an event of another customer
    ]
    records = [record("e1", alerted=True, score=0.9), None, None, record("e4")]
    result = join_labels(labels, records, scored_ttl_ms=90 * DAY_MS)

    assert [c.event_id for c in result.cases] == ["e1"]
    joined = result.cases[0]
    assert joined.is_suspicious
    assert joined.alerted
    assert joined.score == 0.9
    assert joined.narrative == records[0].narrative  # type: ignore[union-attr]
    assert joined.label_time_ms == ms(T0 + timedelta(days=1))
    assert [lb.event_id for lb in result.expired] == ["e2"]
    assert [lb.event_id for lb in result.unknown] == ["e3"]
    assert [lb.event_id for lb in result.mismatched] == ["e4"]


def test_a_case_survives_its_bytes() -> None:
    original = join_labels([label("e1")], [record("e1")], 10 * DAY_MS).cases[0]
    assert LabelledCase.from_bytes(original.to_bytes()) == original


def test_a_chargeback_outranks_an_earlier_analyst_false_positive() -> None:
    analyst_fp = case("e1", suspicious=False, source="analyst", label_time=T0 + timedelta(days=1))
    chargeback = case(
        "e1", suspicious=True, source="chargeback", label_time=T0 + timedelta(days=20)
    )
    assert resolve_by_event([chargeback, analyst_fp]) == [chargeback]
    assert resolve_by_event([analyst_fp, chargeback]) == [chargeback]


def test_within_a_source_the_latest_label_wins_and_events_come_out_in_time_order() -> None:
    first = case("e2", suspicious=True, label_time=T0 + timedelta(days=1), label_id="a")
    revised = case("e2", suspicious=False, label_time=T0 + timedelta(days=3), label_id="b")
    earlier_event = case("e1", at=T0 - timedelta(hours=1))
    resolved = resolve_by_event([first, earlier_event, revised])
    assert resolved == [earlier_event, revised]


def test_replay_keeps_suspicious_cases_first_and_is_deterministic() -> None:
    older = [case(f"s{i}", suspicious=True) for i in range(30)]
    older += [case(f"l{i}", suspicious=False) for i in range(300)]
    sample = replay_sample(older, 100, seed=5)
    assert len(sample) == 100
    assert class_counts(sample) == (30, 70)  # all 30 suspicious fit in half the buffer
    assert replay_sample(list(reversed(older)), 100, seed=5) == sample
    assert replay_sample(older, 100, seed=6) != sample

    many_suspicious = [case(f"s{i}", suspicious=True) for i in range(500)] + older[30:]
    capped = replay_sample(many_suspicious, 100, seed=5)
    assert class_counts(capped) == (50, 50)
    assert replay_sample(older[:10], 100, seed=5) == sorted(older[:10], key=lambda c: c.label_id)


def test_presumed_negatives_are_old_unlabelled_and_unalerted() -> None:
    clock = ms(T0 + timedelta(days=10))
    records = [
        record("old", at=T0),
        record("old-alerted", at=T0, alerted=True),
        record("old-labelled", at=T0),
        record("young", at=T0 + timedelta(days=9)),
    ]
    negatives = presumed_negatives(
        records, {"old-labelled"}, clock_ms=clock, maturity_ms=7 * DAY_MS, limit=10, seed=0
    )
    assert [n.event_id for n in negatives] == ["old"]
    assert negatives[0].source == PRESUMED
    assert not negatives[0].is_suspicious
    assert negatives[0].typology == "legitimate"

    many = [record(f"e{i}", at=T0) for i in range(50)]
    limited = presumed_negatives(many, set(), clock_ms=clock, maturity_ms=0, limit=7, seed=1)
    assert len(limited) == 7
    assert len({n.event_id for n in limited}) == 7


def test_only_events_old_enough_for_complete_labels_are_split() -> None:
    # At the clock, a young fraud the champion alerted is already labelled (an analyst looks
    # within a day) while a young one it missed is not (its chargeback is still to come):
    # judging on young events would favour the champion, so they wait for a later cycle.
    clock = ms(T0 + timedelta(days=10))
    old = case("old", suspicious=True, at=T0)
    edge = case("edge", at=T0 + timedelta(days=3))
    young = case("young", suspicious=True, at=T0 + timedelta(days=9))
    complete, waiting = labels_complete([young, old, edge], clock_ms=clock, maturity_ms=7 * DAY_MS)
    assert complete == [old, edge]
    assert waiting == [young]


def test_composition_counts_suspicious_cases_by_source_typology_and_alert() -> None:
    cases = [
        case("a", suspicious=True, source="analyst"),
        case("b", suspicious=True, source="chargeback"),
        case("c", source=PRESUMED),
    ]
    assert composition(cases) == {
        "suspicious_by_source": {"analyst": 1, "chargeback": 1},
        "suspicious_by_typology": {"card_testing": 2},
        "suspicious_alerted": 2,
        "legitimate": 1,
    }


def test_split_by_time_puts_the_latest_cases_in_the_holdout() -> None:
    cases = [case(f"e{i:03d}", at=T0 + timedelta(hours=i)) for i in range(100)]
    split = split_by_time(list(reversed(cases)), holdout_share=0.2, validation_share=0.1)
    assert split.train == cases[:70]
    assert split.validation == cases[70:80]
    assert split.holdout == cases[80:]
    assert split.holdout_start_ms == cases[80].event_time_ms
    assert split.validation_start_ms == cases[70].event_time_ms
    assert max(c.event_time_ms for c in split.train) < split.validation_start_ms
    assert since(cases, split.holdout_starts) == split.holdout


def test_split_never_cuts_through_one_moment() -> None:
    # 10 cases at one instant straddle the 80 % position: they all go to the holdout side.
    cases = [case(f"a{i}", at=T0 + timedelta(hours=i)) for i in range(75)]
    cases += [case(f"b{i}", at=T0 + timedelta(hours=100)) for i in range(10)]
    cases += [case(f"c{i}", at=T0 + timedelta(hours=200 + i)) for i in range(15)]
    split = split_by_time(cases, holdout_share=0.2, validation_share=0.1)
    times = {c.event_time_ms for c in split.holdout}
    assert not times & {c.event_time_ms for c in split.validation + split.train}
    assert len(split.holdout) == 25


def test_split_shares_count_the_scarce_suspicious_cases() -> None:
    # Fraud comes in bursts: 10 suspicious cases early, 10 late, legitimate ones throughout.
    legitimate = [case(f"l{i:03d}", at=T0 + timedelta(hours=i)) for i in range(200)]
    early = [
        case(f"s{i}", suspicious=True, at=T0 + timedelta(hours=20, minutes=i)) for i in range(10)
    ]
    late = [
        case(f"t{i}", suspicious=True, at=T0 + timedelta(hours=190, minutes=i)) for i in range(10)
    ]
    split = split_by_time(legitimate + early + late, holdout_share=0.25, validation_share=0.25)
    assert class_counts(split.holdout)[0] == 5
    assert class_counts(split.validation)[0] == 5
    assert class_counts(split.train)[0] == 10
    # legitimate cases follow the same cut times
    assert all(c.event_time_ms >= split.holdout_start_ms for c in split.holdout)
    assert all(c.event_time_ms < split.holdout_start_ms for c in split.validation + split.train)
    assert all(c.event_time_ms < split.validation_start_ms for c in split.train)


def test_split_holds_out_the_latest_cases_of_every_typology() -> None:
    # An early burst of one typology and a late burst of another: the holdout keeps the latest
    # quarter of each, so the early typology is judged too (and a challenger that forgot it
    # would be seen forgetting it).
    legitimate = [case(f"l{i:03d}", at=T0 + timedelta(hours=i)) for i in range(200)]
    early = [
        replace(case(f"s{i:02d}", suspicious=True, at=T0 + timedelta(hours=10, minutes=i)),
                typology="account_takeover")
        for i in range(20)
    ]  # fmt: skip
    late = [
        case(f"t{i:02d}", suspicious=True, at=T0 + timedelta(hours=150, minutes=i))
        for i in range(20)
    ]
    split = split_by_time(legitimate + early + late, holdout_share=0.25, validation_share=0.25)
    assert [c.event_id for c in split.holdout if c.typology == "account_takeover"] == [
        f"s{i:02d}" for i in range(15, 20)
    ]
    assert [c.event_id for c in split.validation if c.typology == "account_takeover"] == [
        f"s{i:02d}" for i in range(10, 15)
    ]
    assert class_counts(split.holdout)[0] == 10
    assert class_counts(split.train)[0] == 20
    # within each typology, nothing trained on is later than what is held out
    for typology in ("account_takeover", "card_testing"):
        start = split.holdout_starts[typology]
        assert all(c.event_time_ms < start for c in split.train if c.typology == typology)
        assert all(c.event_time_ms >= start for c in split.holdout if c.typology == typology)
    # the shadow re-check's "never trained on" is the holdout plus whatever came after
    later = case("u0", suspicious=True, at=T0 + timedelta(hours=300))
    unseen = since(legitimate + early + late + [later], split.holdout_starts)
    assert {c.event_id for c in unseen} == {c.event_id for c in split.holdout} | {"u0"}


def test_split_trains_on_a_typology_too_rare_to_hold_out() -> None:
    legitimate = [case(f"l{i:03d}", at=T0 + timedelta(hours=i)) for i in range(100)]
    lone = replace(case("s0", suspicious=True, at=T0 + timedelta(hours=99)), typology="structuring")
    common = [case(f"t{i}", suspicious=True, at=T0 + timedelta(hours=i)) for i in range(40)]
    split = split_by_time(legitimate + common + [lone], holdout_share=0.25, validation_share=0.1)
    assert lone in split.train
    # a later structuring case is one the challenger never saw
    assert since([lone], split.holdout_starts) == []


def test_split_rejects_shares_that_leave_nothing_to_train() -> None:
    with pytest.raises(ValueError, match="leave cases to train"):
        split_by_time([case("e1")], holdout_share=0.6, validation_share=0.4)
