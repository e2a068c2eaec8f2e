"""Counterparty risk from labels that have had time to arrive, and cards that passed through a
compromised point: hand-computed expectations on the real Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import LabelEvent, LabelSource, TransactionEvent, Typology
from stream.context.store import ContextLimits
from tests.context.conftest import T0

pytestmark = pytest.mark.integration

DAY = 24 * 60  # minutes


def fraud(event: TransactionEvent, label_minutes: float) -> LabelEvent:
    """A chargeback for ``event`` arriving at T0 + ``label_minutes``."""
    return LabelEvent(
        label_id=f"lab-{event.event_id}",
        event_id=event.event_id,
        customer_id=event.customer_id,
        event_time=event.event_time,
        label_time=T0 + timedelta(minutes=label_minutes),
        source=LabelSource.CHARGEBACK,
        is_suspicious=True,
        typology=Typology.STOLEN_CARD,
        counterparty_id=event.counterparty_id,
        terminal_id=event.terminal_id,
    )


def test_a_terminal_becomes_risky_once_labels_arrive_and_young_days_never_dilute(
    make_event, make_store
) -> None:
    def pay(minutes: float, customer: str) -> TransactionEvent:
        return make_event(minutes, customer=customer, terminal="trm-1", counterparty="mer-1")

    day0 = [pay(i, f"cus-{i}") for i in range(10)]  # two of them are fraud
    days1_3 = [pay(d * DAY + i, f"new-{d}-{i}") for d in (1, 2, 3) for i in range(5)]
    burst = [pay(d * DAY + i, f"burst-{d}-{i}") for d in (4, 5) for i in range(50)]
    labels = [fraud(day0[0], 2 * DAY + 180), fraud(day0[1], 2 * DAY + 180)]  # day 2, 12:00
    after_label = pay(2 * DAY + 240, "late-1")  # day 2, 13:00
    day6 = pay(6 * DAY, "cus-x")

    store = make_store(label_maturity_days=3)
    before = store.update_batch([*day0, *days1_3[:5], *days1_3[5:10]])
    store.apply_labels(labels)
    rest = store.update_batch([after_label, *days1_3[10:], *burst, day6])
    f = {c.event_id: c.features for c in [*before, *rest]}

    # day 2 before the chargebacks arrived: nothing known
    morning = f[days1_3[5].event_id]
    assert (morning.cp_fraud_labels_30d, morning.cp_days_since_fraud) == (0, -1)
    # after them: known, but the defrauded day 0 is not yet mature (maturity 3 days)
    noon = f[after_label.event_id]
    assert noon.cp_fraud_labels_30d == 2
    assert noon.cp_days_since_fraud == pytest.approx(2 + 4 / 24 - 1 / 1440, abs=1e-4)
    assert (noon.cp_mature_count_30d, noon.cp_mature_fraud_30d) == (0, 0)
    # day 3: day 0 is the newest mature day: 2 frauds among its 10 payments
    day3 = f[days1_3[10].event_id]
    assert (day3.cp_mature_count_1d, day3.cp_mature_fraud_1d) == (10, 2)
    assert day3.cp_mature_rate_1d == pytest.approx(0.2)
    assert day3.cp_mature_rate_7d == pytest.approx(0.2)
    # the diluted 30-day rate counts every payment so far, labelled or not yet
    assert day3.cp_fraud_rate_30d == pytest.approx(2 / 22)  # 10 + 5 + 6 + this one
    # day 6: mature days -3..3 hold 10 + 5 + 5 + 1 + 5 payments; the busy days 4 and 5 are
    # too young to count, so they do not dilute the share
    last = f[day6.event_id]
    assert (last.cp_mature_count_1d, last.cp_mature_fraud_1d) == (5, 0)
    assert (last.cp_mature_count_7d, last.cp_mature_fraud_7d) == (26, 2)
    assert last.cp_mature_rate_7d == pytest.approx(2 / 26)
    assert last.cp_count_7d == 127  # days 0..6 including the burst


def test_cards_seen_before_a_confirmation_are_exposed_and_not_those_after_a_clean_up(
    make_event, make_store
) -> None:
    def at_point(minutes: float, customer: str, terminal: str = "trm-x") -> TransactionEvent:
        return make_event(minutes, customer=customer, terminal=terminal, counterparty="mer-x")

    def elsewhere(minutes: float, customer: str) -> TransactionEvent:
        return make_event(minutes, customer=customer, counterparty="shop-far")

    long_before = at_point(-10 * DAY, "cus-old")  # before the look-back of a week
    regulars = [at_point(60 + i, f"cus-{i}") for i in range(5)]  # day 0; 0 and 1 defrauded
    early_cash_out = elsewhere(DAY, "cus-3")  # day 1: nothing confirmed yet
    labels = [fraud(regulars[0], 2 * DAY), fraud(regulars[1], 2 * DAY)]  # day 2, 09:00
    after_clean_up = at_point(5 * DAY, "cus-new")  # the terminal is clean again
    cash_out = elsewhere(4 * DAY, "cus-3")
    new_card_elsewhere = elsewhere(6 * DAY, "cus-new")
    old_card_elsewhere = elsewhere(6 * DAY, "cus-old")
    # a busy terminal with one unrelated chargeback does not make its customers exposed
    busy = [at_point(i, f"busy-{i}", terminal="trm-busy") for i in range(200)]
    busy_label = fraud(busy[7], 2 * DAY)
    busy_customer_elsewhere = elsewhere(4 * DAY, "busy-3")

    store = make_store()
    first = store.update_batch([long_before, *regulars, *busy, early_cash_out])
    result = store.apply_labels([*labels, busy_label])
    assert result.exposed == 5  # the five regulars' payments at trm-x
    assert store.apply_labels(labels).exposed == 0  # idempotent
    rest = store.update_batch(
        [cash_out, after_clean_up, new_card_elsewhere, old_card_elsewhere, busy_customer_elsewhere]
    )
    f = {c.event_id: c.features for c in [*first, *rest]}

    assert f[early_cash_out.event_id].compromised_points == 0  # never the future
    exposed = f[cash_out.event_id]
    assert exposed.compromised_points == 1
    assert exposed.days_since_compromised_visit == pytest.approx(4 - 63 / 1440, abs=1e-4)
    assert f[new_card_elsewhere.event_id].compromised_points == 0
    assert f[old_card_elsewhere.event_id].compromised_points == 0
    assert f[busy_customer_elsewhere.event_id].compromised_points == 0
    # the clean terminal still carries its history
    assert f[after_clean_up.event_id].cp_fraud_labels_30d == 2


def test_the_fan_out_of_one_label_is_bounded(make_event, make_store) -> None:
    store = make_store(limits=ContextLimits(exposure_fanout_cap=4))
    visits = [
        make_event(i, customer=f"cus-{i}", terminal="trm-1", counterparty="mer-1")
        for i in range(20)
    ]
    store.update_batch(visits)
    result = store.apply_labels([fraud(visits[0], DAY), fraud(visits[1], DAY)])
    assert result.exposed == 4


def test_a_changed_maturity_gives_what_a_fresh_store_computes(make_event, make_store) -> None:
    from tests.context.test_context_oracle import fraud_labels, random_stream

    events = random_stream(make_event, seed=21, count=360)
    labels = fraud_labels(events, seed=4)
    changed = make_store("-changed", label_maturity_days=3)
    fresh = make_store("-fresh", label_maturity_days=6)
    for store in (changed, fresh):
        store.apply_labels(labels)
    half = len(events) // 2
    changed.update_batch(events[:half])
    fresh.update_batch(events[:half])
    changed.set_label_maturity_days(6)
    assert [c.features for c in changed.update_batch(events[half:])] == [
        c.features for c in fresh.update_batch(events[half:])
    ]


def test_replays_with_labels_revealed_in_time_reproduce_every_feature(
    make_event, make_store
) -> None:
    from tests.context.test_context_oracle import fraud_labels, random_stream

    events = random_stream(make_event, seed=8, count=400)
    labels = sorted(fraud_labels(events, seed=9), key=lambda label: label.label_time)

    def replay(suffix: str) -> list[object]:
        store = make_store(suffix, label_maturity_days=2)
        out, next_label = [], 0
        for start in range(0, len(events), 25):
            chunk = events[start : start + 25]
            known = next_label
            while known < len(labels) and labels[known].label_time <= chunk[0].event_time:
                known += 1
            store.apply_labels(labels[next_label:known])
            next_label = known
            out += [c.features for c in store.update_batch(chunk)]
        return out

    first, second = replay("-a"), replay("-b")
    assert first == second
    assert any(f.compromised_points for f in first)  # type: ignore[attr-defined]


def test_the_label_reveal_clock_gives_the_same_contexts_at_every_batch_size(
    make_event, make_store, test_settings
) -> None:
    """Dataset building (``replay_contexts``) on the label-reveal clock that replays share:
    whatever the batch size, every feature and story is the same - which applying each
    batch's labels before it (the rule before the clock was shared) does not give: it marks
    cards exposed by a compromised point only among payments already applied."""
    from stream.datasets import replay_contexts
    from tests.context.test_context_oracle import fraud_labels, random_stream

    events = random_stream(make_event, seed=8, count=400)
    labels = fraud_labels(events, seed=9)

    def on_the_clock(size: int) -> list[tuple[object, object]]:
        contexts = replay_contexts(
            events, labels, test_settings, label_maturity=2, progress=False, chunk=size
        )
        return [(c.features, c.story) for c in contexts]

    whole = on_the_clock(1000)
    assert on_the_clock(1) == whole
    assert on_the_clock(7) == whole
    assert any(f.compromised_points for f, _ in whole)  # type: ignore[attr-defined]

    def labels_before_each_batch(suffix: str, size: int) -> list[object]:
        store = make_store(suffix, label_maturity_days=2)
        schedule = sorted(labels, key=lambda label: label.label_time)
        out, known = [], 0
        for start in range(0, len(events), size):
            batch = events[start : start + size]
            due = known
            while due < len(schedule) and schedule[due].label_time <= batch[-1].event_time:
                due += 1
            store.apply_labels(schedule[known:due])
            known = due
            out += [c.features for c in store.update_batch(batch)]
        return out

    assert labels_before_each_batch("-small", 7) != labels_before_each_batch("-big", 200)
