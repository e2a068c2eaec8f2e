"""Prevalence, typology mix, late introduction, and analyst dispositions from the truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from schemas import LabelSource, Typology
from stream.simulate import catalog as cat
from stream.simulate.config import build_config
from stream.simulate.engine import simulate
from stream.simulate.errors import SimulationError
from stream.simulate.population import DAY_MS, build_world
from stream.simulate.truth import analyst_dispositions, read_truth
from tests.simulate.conftest import Run


@pytest.mark.parametrize("prevalence", [0.005, 0.02])
def test_prevalence_is_met_within_tolerance(prevalence: float) -> None:
    sim = simulate(build_config(customers=1500, days=30, seed=5, prevalence=prevalence))
    share = float(sim.suspicious.mean())
    assert len(sim.events) > 100_000
    assert abs(share - prevalence) <= 0.15 * prevalence, share


def test_mix_weights_shift_suspicious_events_between_typologies() -> None:
    sim = simulate(
        build_config(
            customers=1500,
            days=30,
            seed=5,
            mix="structuring=4",
            exclude=["card_testing", "stolen_card"],
        )
    )
    counts = np.bincount(sim.events["typology"], minlength=len(cat.TYPOLOGIES))
    events = {t: int(counts[i]) for i, t in enumerate(cat.TYPOLOGIES)}
    assert events[Typology.CARD_TESTING] == events[Typology.STOLEN_CARD] == 0
    others = [events[t] for t in (Typology.ROUND_TRIPPING, Typology.PASS_THROUGH)]
    # weight 4 against 1 (scenario granularity blurs the exact ratio)
    assert events[Typology.STRUCTURING] > 2.5 * max(others)


def test_a_typology_introduced_late_appears_only_from_that_day() -> None:
    config = build_config(customers=600, days=30, seed=8, introduce=["round_tripping@18"])
    sim = simulate(config)
    code = cat.code(cat.TYPOLOGIES, Typology.ROUND_TRIPPING)
    times = sim.events["t_ms"][sim.events["typology"] == code]
    first_allowed = sim.world.start_ms + 18 * DAY_MS
    assert len(times) > 0
    assert times.min() >= first_allowed
    # its benign look-alikes are ordinary life and may appear before
    assert any(kind == "lookalike:friend_repayment" for _, kind in sim.world.scenarios)


def test_the_population_does_not_depend_on_the_typology_mix() -> None:
    plain = build_world(build_config(customers=200, days=10, seed=4))
    mixed = build_world(build_config(customers=200, days=10, seed=4, exclude=["structuring"]))
    assert np.array_equal(plain.customers.income_usd, mixed.customers.income_usd)
    assert plain.counterparties.ids.values == mixed.counterparties.ids.values


def test_analyst_dispositions_follow_the_truth(small_run: Run) -> None:
    truth = read_truth(small_run.out / "truth.jsonl")
    fraud = next(t for t in truth.values() if t.is_suspicious)
    honest = next(t for t in truth.values() if not t.is_suspicious)
    delay = dt.timedelta(hours=6)
    labels = analyst_dispositions(
        [fraud.event_id, honest.event_id, fraud.event_id],
        truth,
        delay,
        alert_ids={fraud.event_id: "alert-1"},
    )
    assert [label.event_id for label in labels] == [fraud.event_id, honest.event_id]
    first, second = labels
    assert first.source is LabelSource.ANALYST
    assert first.alert_id == "alert-1"
    assert (first.is_suspicious, first.typology) == (True, fraud.typology)
    assert first.scenario_id == fraud.scenario_id
    assert (second.is_suspicious, second.typology) == (False, Typology.LEGITIMATE)
    assert second.label_time == honest.event_time + delay
    with pytest.raises(SimulationError):
        analyst_dispositions(["ev-unknown"], truth, delay)


def test_a_bank_without_business_customers_still_gets_every_typology() -> None:
    sim = simulate(build_config(customers=300, days=20, seed=3, business_share=0.0))
    assert not (sim.world.customers.segment == 1).any()
    present = set(np.unique(sim.events["typology"]).tolist())
    assert present == set(range(len(cat.TYPOLOGIES)))
    assert sim.plan.skipped == {}
