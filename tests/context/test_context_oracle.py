"""The Lua scripts against a plain-Python reference model of the same definitions.

A random but realistic stream (several customers sharing merchants, beneficiaries and a
terminal; cards, transfers, cash near the reporting threshold; small out-of-order steps within
the tolerance; 40 days, so 30-day windows fill and old log records are pruned) is run through
the real store on the real Redis, in batches of several sizes, and every feature of every event
is compared with what ``reference_features`` computes from the arrival order alone. The
reference is deliberately naive (it rescans everything for every event), so it shares no code
or shortcut with the scripts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest

from schemas import (
    Channel,
    CounterpartyType,
    Direction,
    LabelEvent,
    LabelSource,
    TransactionEvent,
    Typology,
)
from schemas.features import FEATURE_NAMES, ContextFeatures
from schemas.reference import (
    HIGH_RISK_COUNTRIES,
    NEAR_THRESHOLD_LOW_USD,
    REPORTING_THRESHOLD_USD,
    RISKY_MCCS,
    SMALL_AMOUNT_USD,
    amount_usd,
)
from stream.context.ops import epoch_ms

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
TOLERANCE_S = 3600
TRANSFERS = {Channel.WIRE, Channel.ACH, Channel.P2P, Channel.CRYPTO}


@dataclass
class Seen:
    """One arrived event, as the reference sees it."""

    event: TransactionEvent
    t: int
    cents: int
    cp_new: bool


def _reference_customer(mine: list[Seen], cur: Seen) -> dict[str, float]:
    """Customer features of ``cur`` given the customer's earlier arrivals ``mine``."""
    e, t = cur.event, cur.t
    out = e.direction is Direction.OUTBOUND
    upto = [s for s in [*mine, cur] if s.t <= t]
    in24 = [s for s in upto if s.t > t - DAY]
    in1 = [s for s in in24 if s.t > t - HOUR]
    day = t // DAY

    def is_out(s: Seen) -> bool:
        return s.event.direction is Direction.OUTBOUND

    def by_days(n: int) -> list[Seen]:
        return [s for s in [*mine, cur] if day - n < s.t // DAY <= day]

    def sums(rows: list[Seen]) -> list[float]:
        o = [s for s in rows if is_out(s)]
        i = [s for s in rows if not is_out(s)]
        return [len(o), sum(s.cents for s in o) / 100, len(i), sum(s.cents for s in i) / 100]

    f: dict[str, float] = {}
    o1 = [s for s in in1 if is_out(s)]
    f["out_count_1h"], f["out_sum_1h"] = len(o1), sum(s.cents for s in o1) / 100
    (
        f["out_count_24h"],
        f["out_sum_24h"],
        f["in_count_24h"],
        f["in_sum_24h"],
    ) = sums(in24)
    f["out_count_7d"], f["out_sum_7d"], f["in_count_7d"], f["in_sum_7d"] = sums(by_days(7))
    f["out_count_30d"], f["out_sum_30d"], f["in_count_30d"], f["in_sum_30d"] = sums(by_days(30))
    f["distinct_counterparties_1h"] = len({s.event.counterparty_id for s in in1})
    f["distinct_counterparties_24h"] = len({s.event.counterparty_id for s in in24})
    f["distinct_countries_24h"] = len({s.event.country for s in in24})
    f["distinct_devices_24h"] = len({s.event.device_id for s in in24 if s.event.device_id})

    def first_seen(pred: object) -> int | None:
        times = [s.t for s in mine if pred(s.event)]  # type: ignore[operator]
        return min(times) if times else None

    cp_first = first_seen(lambda x: x.counterparty_id == e.counterparty_id)
    f["counterparty_new"] = float(cp_first is None or cp_first > t)
    f["counterparty_known_days"] = 0.0 if f["counterparty_new"] else (t - cp_first) / DAY  # type: ignore[operator]
    f["new_counterparties_24h"] = sum(1 for s in in24 if s.cp_new)
    if e.device_id:
        dev_first = first_seen(lambda x: x.device_id == e.device_id)
        f["device_new"] = float(dev_first is None or dev_first > t)
    else:
        f["device_new"] = 0.0
    country_first = first_seen(lambda x: x.country == e.country)
    f["country_new"] = float(country_first is None or country_first > t)

    # Welford over earlier arrivals in the same direction, in arrival order
    n, mean, m2, total = 0, 0.0, 0.0, 0
    for s in mine:
        if is_out(s) == out:
            x = math.log(1 + s.cents / 100)
            n += 1
            delta = x - mean
            mean += delta / n
            m2 += delta * (x - mean)
            total += s.cents
    x = math.log(1 + cur.cents / 100)
    f["amount_zscore"] = (
        max(-50.0, min(50.0, (x - mean) / max(0.25, math.sqrt(m2 / (n - 1))))) if n >= 2 else 0.0
    )
    f["amount_to_mean_ratio"] = cur.cents / (total / n) if n >= 1 and total > 0 else 1.0
    f["baseline_count"] = n

    before = [s.t for s in mine if s.t <= t]
    f["seconds_since_previous"] = (t - max(before)) / 1000 if before else -1.0
    f["account_age_days"] = (t - min(s.t for s in [*mine, cur])) / DAY
    f["small_count_1h"] = sum(1 for s in in1 if s.cents / 100 <= SMALL_AMOUNT_USD)
    f["ecommerce_count_1h"] = sum(1 for s in in1 if s.event.channel is Channel.ECOMMERCE)
    f["risky_mcc_count_1h"] = sum(1 for s in in1 if s.event.mcc in RISKY_MCCS)
    cash7 = [s for s in by_days(7) if s.event.channel is Channel.CASH and not is_out(s)]
    f["near_threshold_cash_7d"] = sum(
        1
        for s in cash7
        if NEAR_THRESHOLD_LOW_USD
        <= amount_usd(s.event.amount_minor, s.event.currency)
        < REPORTING_THRESHOLD_USD
    )
    f["cash_in_sum_7d"] = sum(s.cents for s in cash7) / 100
    latest_in: dict[str, int] = {}
    for s in [*mine, cur]:
        if not is_out(s):
            cp = s.event.counterparty_id
            latest_in[cp] = max(latest_in.get(cp, s.t), s.t)
    f["inbound_senders_7d"] = sum(1 for v in latest_in.values() if v > t - 7 * DAY)
    inbound_before = [s.t for s in mine if not is_out(s) and s.t <= t]
    f["seconds_since_inbound"] = (t - max(inbound_before)) / 1000 if inbound_before else -1.0
    f["out_in_ratio_24h"] = f["out_sum_24h"] / f["in_sum_24h"] if f["in_sum_24h"] > 0 else -1.0
    f["round_trip_match"], f["round_trip_days"] = 0.0, -1.0
    if e.channel in TRANSFERS and not out:
        sent = [s for s in mine if is_out(s) and s.event.channel in TRANSFERS][-16:]
        matches = [
            s.t
            for s in sent
            if t - 30 * DAY < s.t <= t
            and s.event.counterparty_id != e.counterparty_id
            and abs(cur.cents - s.cents) <= 0.05 * s.cents
        ]
        if matches:
            f["round_trip_match"], f["round_trip_days"] = 1.0, (t - max(matches)) / DAY
    newest = max((s.t for s in mine), default=None)
    f["late"] = float(newest is not None and t < newest - TOLERANCE_S * 1000)
    return f


def _reference_counterparty(
    theirs: list[Seen], cur: Seen, prefix: str, labels: dict[str, int], maturity: int
) -> dict[str, float]:
    """``labels``: event id -> label time of the fraud labels (all known up front: what
    counts is their label time, never when the store learnt them)."""
    t = cur.t
    rows = [*theirs, cur]
    hour, day = t // HOUR, t // DAY
    latest: dict[str, int] = {}
    for s in rows:
        latest[s.event.customer_id] = max(latest.get(s.event.customer_id, s.t), s.t)
    end = day - maturity  # the newest mature day
    oldest_label = min((end - 29) * DAY, t - 30 * DAY + 1)
    known = [
        s.t
        for s in rows
        if s.event.event_id in labels and oldest_label <= labels[s.event.event_id] <= t
    ]
    count_30d = sum(1 for s in rows if day - 30 < s.t // DAY <= day)
    labels_30d = sum(1 for et in known if t - 30 * DAY < et <= t)
    f = {
        "count_24h": sum(1 for s in rows if hour - 24 < s.t // HOUR <= hour),
        "count_7d": sum(1 for s in rows if day - 7 < s.t // DAY <= day),
        "customers_24h": sum(1 for v in latest.values() if v > t - DAY),
        "customers_7d": sum(1 for v in latest.values() if v > t - 7 * DAY),
        "fraud_labels_30d": labels_30d,
        "fraud_rate_30d": min(1.0, labels_30d / max(1, count_30d)),
        "age_days": (t - min(s.t for s in rows)) / DAY,
        "days_since_fraud": (t - max(known)) / DAY if known else -1.0,
    }
    for w in (1, 7, 30):
        count = sum(1 for s in theirs if end - w < s.t // DAY <= end)
        frauds = sum(1 for et in known if end - w < et // DAY <= end)
        f[f"mature_count_{w}d"], f[f"mature_fraud_{w}d"] = count, frauds
        f[f"mature_rate_{w}d"] = min(1.0, frauds / max(1, count))
    return {prefix + k: float(v) for k, v in f.items()}


def reference_features(
    events: Sequence[TransactionEvent], labels: dict[str, int] | None = None, maturity: int = 7
) -> list[dict[str, float]]:
    """Every customer and counterparty feature, from the arrival order alone (and the fraud
    labels' times: event id -> label time in ms)."""
    seen: list[Seen] = []
    result = []
    for e in events:
        t = epoch_ms(e.event_time)
        cents = round(amount_usd(e.amount_minor, e.currency) * 100)
        mine = [s for s in seen if s.event.customer_id == e.customer_id]
        firsts = [s.t for s in mine if s.event.counterparty_id == e.counterparty_id]
        cur = Seen(e, t, cents, cp_new=not firsts or min(firsts) > t)
        f = _reference_customer(mine, cur)
        usd = amount_usd(e.amount_minor, e.currency)
        f.update(
            amount_usd=usd,
            is_outbound=float(e.direction is Direction.OUTBOUND),
            risky_mcc=float(e.mcc in RISKY_MCCS),
            high_risk_country=float(e.country in HIGH_RISK_COUNTRIES),
            near_threshold_cash=float(
                e.channel is Channel.CASH
                and e.direction is Direction.INBOUND
                and NEAR_THRESHOLD_LOW_USD <= usd < REPORTING_THRESHOLD_USD
            ),
            hour_of_day=float(e.event_time.hour),
            is_weekend=float(e.event_time.weekday() >= 5),
            has_terminal=float(e.terminal_id is not None),
        )

        # the counterparty entity: the terminal when the event names one
        def entity(x: TransactionEvent) -> tuple[str, str]:
            return ("t", x.terminal_id) if x.terminal_id else ("p", x.counterparty_id)

        f.update(
            _reference_counterparty(
                [s for s in seen if entity(s.event) == entity(e)],
                cur,
                "cp_",
                labels or {},
                maturity,
            )
        )
        # nobody is marked as exposed: every label is known before any payment arrives
        f.update(compromised_points=0.0, days_since_compromised_visit=-1.0)
        result.append(f)
        seen.append(cur)
    return result


def random_stream(make_event, seed: int, count: int) -> list[TransactionEvent]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    customers = [f"cus-{i}" for i in range(4)]
    merchants = [f"mer-{i}" for i in range(5)]
    accounts = [f"acc-{i}" for i in range(4)]
    minutes = 0.0
    events: list[TransactionEvent] = []
    for _ in range(count):
        # bursts of minutes, gaps of hours, now and then a silence of days
        minutes += rng.choice([rng.uniform(0.5, 20), rng.uniform(30, 600), rng.uniform(1500, 4000)])
        kind = rng.random()
        customer = rng.choice(customers)
        common = {
            "customer": customer,
            "device": rng.choice(["dev-a", "dev-b", None, f"dev-{customer}"]),
            "country": rng.choice(["US", "US", "GB", "FR", "IR"]),
        }
        if kind < 0.45:
            event = make_event(
                minutes,
                counterparty=rng.choice(merchants),
                channel=rng.choice([Channel.CARD, Channel.ECOMMERCE]),
                amount_usd=rng.choice([rng.uniform(0.5, 4.5), rng.uniform(5, 300)]),
                mcc=rng.choice(["5411", "5732", "5947", None]),
                terminal=rng.choice(["trm-1", "trm-2", None]),
                **common,
            )
        elif kind < 0.8:
            event = make_event(
                minutes,
                counterparty=rng.choice(accounts),
                counterparty_type=CounterpartyType.ACCOUNT,
                channel=rng.choice(sorted(TRANSFERS)),
                direction=rng.choice(list(Direction)),
                amount_usd=rng.choice([1000.0, 1030.0, 990.0, rng.uniform(10, 5000)]),
                **common,
            )
        else:
            event = make_event(
                minutes,
                counterparty="branch-1",
                counterparty_type=CounterpartyType.BRANCH,
                channel=Channel.CASH,
                direction=Direction.INBOUND,
                amount_usd=rng.choice([9500.0, 8200.0, 400.0]),
                **common,
            )
        events.append(event)
    # out of order: now and then an event arrives after a later one (within the tolerance)
    for i in range(1, len(events)):
        if rng.random() < 0.12:
            a, b = events[i - 1], events[i]
            if b.event_time - a.event_time < timedelta(seconds=TOLERANCE_S // 2):
                events[i - 1], events[i] = b, a
    return events


def batches(events: list[TransactionEvent], sizes: Sequence[int]) -> list[list[TransactionEvent]]:
    out, i, k = [], 0, 0
    while i < len(events):
        size = sizes[k % len(sizes)]
        out.append(events[i : i + size])
        i, k = i + size, k + 1
    return out


def _assert_close(got: ContextFeatures, want: dict[str, float], where: str) -> None:
    for name, expected in want.items():
        value = getattr(got, name)
        # records travel as float32: compare at float32 precision
        assert math.isclose(value, expected, rel_tol=2e-6, abs_tol=2e-5), (
            f"{where}: {name} = {value}, reference says {expected}"
        )


def fraud_labels(events: list[TransactionEvent], seed: int) -> list[LabelEvent]:
    """Fraud labels for about one event in six, arriving 2 hours to 12 days after it."""
    rng = random.Random(seed)
    return [
        LabelEvent(
            label_id=f"lab-{e.event_id}",
            event_id=e.event_id,
            customer_id=e.customer_id,
            event_time=e.event_time,
            label_time=e.event_time + timedelta(hours=rng.uniform(2, 12 * 24)),
            source=LabelSource.CHARGEBACK,
            is_suspicious=True,
            typology=Typology.STOLEN_CARD,
            counterparty_id=e.counterparty_id,
            terminal_id=e.terminal_id,
        )
        for e in events
        if rng.random() < 1 / 6
    ]


@pytest.mark.parametrize("sizes", [(1,), (7, 50, 3)], ids=["one-by-one", "mixed-batches"])
def test_every_feature_matches_the_reference(make_event, make_store, sizes) -> None:  # type: ignore[no-untyped-def]
    events = random_stream(make_event, seed=11, count=420)
    labels = fraud_labels(events, seed=3)
    store = make_store(tolerance_s=TOLERANCE_S, label_maturity_days=3)
    store.apply_labels(labels)
    contexts = [c for batch in batches(events, sizes) for c in store.update_batch(batch)]
    expected = reference_features(
        events, {label.event_id: epoch_ms(label.label_time) for label in labels}, maturity=3
    )
    assert not any(c.duplicate for c in contexts)
    assert {n for want in expected for n in want} <= set(FEATURE_NAMES)
    for i, (context, want) in enumerate(zip(contexts, expected, strict=True)):
        _assert_close(context.features, want, f"event {i} ({events[i].event_id})")
    # the stream exercised what it is meant to
    f = [c.features for c in contexts]
    assert any(x.round_trip_match for x in f)
    assert any(x.near_threshold_cash_7d >= 2 for x in f)
    assert any(x.out_count_30d > x.out_count_7d > x.out_count_24h for x in f)
    assert any(x.seconds_since_previous > 86400 for x in f)
    assert any(0 < x.cp_mature_fraud_7d < x.cp_mature_fraud_30d for x in f)
    assert any(x.cp_fraud_labels_30d > x.cp_mature_fraud_30d for x in f)  # immature labels


def test_batch_boundaries_do_not_change_any_value(make_event, make_store) -> None:  # type: ignore[no-untyped-def]
    events = random_stream(make_event, seed=5, count=300)
    one = [c.features for c in make_store().update_batch(events)]
    other_store = make_store("-other")
    many = [c.features for b in batches(events, (1, 2, 9)) for c in other_store.update_batch(b)]
    assert one == many
