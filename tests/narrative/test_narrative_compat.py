"""Models trained on template n1 keep reading exactly what they were trained on.

The golden digest below is of 600 n1 narratives produced by the n1 builder as it was released
(commit c33e82f) from the same seeded inputs; the n2 clauses and f2 features added since must
not change one character of them.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

from schemas import Channel, CounterpartyType, Direction, TransactionEvent
from schemas.features import FEATURE_NAMES, FEATURE_SETS, ContextFeatures
from schemas.narrative import NarrativeSpec, build_narrative, default_spec
from schemas.narrative.spec import LEVELED_N1
from schemas.reference import RISKY_MCCS

N1_DEFAULT_VERSION = "n1.f1-a68d6dc47a"
N1_GOLDEN_SHA256 = "4c927f6711b195fdab4a290b86d0d348e6a74552b8473e6a9671b522bd0c05c8"
FLAGS = (
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


def n1_inputs(n: int = 600, seed: int = 11) -> list[tuple[TransactionEvent, dict[str, float]]]:
    """Random events and f1 feature values (the generator the golden digest was made with)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        values = {
            name: rng.choice([0.0, 1.0, 2.0, 3.0, 7.0, 12.0, 45.0, 250.0, 1e4, 3e6])
            for name in FEATURE_SETS["f1"]
        }
        values.update(
            amount_zscore=rng.uniform(-60, 60),
            seconds_since_previous=rng.choice([-1.0, 10.0, 4e6, 3e7]),
            seconds_since_inbound=rng.choice([-1.0, 100.0, 10_000.0, 1e6]),
            out_in_ratio_24h=rng.choice([-1.0, 0.9, 1.0, 3.0]),
            hour_of_day=float(rng.randrange(24)),
            cp_fraud_rate_30d=rng.choice([0.0, 0.01, 0.05, 0.5]),
        )
        for flag in FLAGS:
            values[flag] = float(rng.random() < 0.5)
        event = TransactionEvent(
            event_id="ev-1",
            event_time=datetime(2025, 3, 3, 14, 0, tzinfo=UTC),
            customer_id="cus-1",
            account_id="acc-1",
            channel=rng.choice(list(Channel)),
            direction=rng.choice(list(Direction)),
            amount_minor=4000,
            currency="USD",
            counterparty_id="cp-1",
            counterparty_type=rng.choice(list(CounterpartyType)),
            mcc=rng.choice([None, "5411", *sorted(RISKY_MCCS)]),
            country="US",
        )
        out.append((event, values))
    return out


def n1_default_spec() -> NarrativeSpec:
    names = {leveled.feature for leveled in LEVELED_N1}
    edges = {name: e for name, e in default_spec().edges.items() if name in names}
    return NarrativeSpec(edges=edges, template_version="n1", features_version="f1")


def test_n1_narratives_are_unchanged() -> None:
    spec = n1_default_spec()
    assert spec.version == N1_DEFAULT_VERSION
    assert spec.feature_names == FEATURE_SETS["f1"]
    zeros = dict.fromkeys(FEATURE_NAMES, 0.0)
    # f2 features set to values that would speak in n2: n1 must stay silent about them
    loud = {
        "cp_mature_fraud_7d": 3.0,
        "cp_mature_rate_7d": 0.5,
        "cp_days_since_fraud": 2.0,
        "compromised_points": 1.0,
        "days_since_compromised_visit": 3.0,
    }
    texts = []
    for event, values in n1_inputs():
        features = ContextFeatures(**{**zeros, **loud, **values})
        texts.append(build_narrative(event, features, spec).text)
    assert hashlib.sha256("\n".join(texts).encode()).hexdigest() == N1_GOLDEN_SHA256


def test_n1_and_n2_specs_round_trip_and_differ() -> None:
    n1, n2 = n1_default_spec(), default_spec()
    assert NarrativeSpec.from_json(n1.to_json()) == n1
    assert n2.template_version == "n2"
    assert n2.feature_names == FEATURE_NAMES
    with_maturity = NarrativeSpec(edges=n2.edges, label_maturity_days=9)
    assert with_maturity.version != n2.version
    assert NarrativeSpec.from_json(with_maturity.to_json()).label_maturity_days == 9
