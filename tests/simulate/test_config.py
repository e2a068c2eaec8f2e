"""Parsing and validation of the simulator's options."""

from __future__ import annotations

import pytest

from schemas import SUSPICIOUS_TYPOLOGIES, Typology
from stream.simulate.config import (
    SimulationConfig,
    build_config,
    parse_day_range,
    parse_introduce,
    parse_mix,
)
from stream.simulate.errors import SimulationConfigError


def test_mix_overrides_only_the_typologies_named_and_exclude_zeroes() -> None:
    config = build_config(mix="structuring=2, card_testing=0.5", exclude=["pass_through"])
    assert config.weight(Typology.STRUCTURING) == 2.0
    assert config.weight(Typology.CARD_TESTING) == 0.5
    assert config.weight(Typology.PASS_THROUGH) == 0.0
    assert config.weight(Typology.ROUND_TRIPPING) == 1.0
    assert set(config.mix) == set(SUSPICIOUS_TYPOLOGIES)


@pytest.mark.parametrize(
    "text", ["structuring", "structuring=x", "structuring=-1", "nonsense=1", "legitimate=1"]
)
def test_malformed_mix_is_rejected_with_our_error(text: str) -> None:
    with pytest.raises(SimulationConfigError):
        parse_mix(text)


def test_introduce_parses_typology_at_day_and_checks_the_day_is_in_the_run() -> None:
    assert parse_introduce(["round_tripping@15"]) == {Typology.ROUND_TRIPPING: 15}
    with pytest.raises(SimulationConfigError):
        parse_introduce(["round_tripping"])
    with pytest.raises(SimulationConfigError):
        build_config(days=10, introduce=["round_tripping@10"])
    config = build_config(days=30, introduce=["round_tripping@20"], warmup_days=2)
    assert config.first_day(Typology.ROUND_TRIPPING) == 20
    assert config.first_day(Typology.STRUCTURING) == 2


def test_day_ranges() -> None:
    assert parse_day_range("5-45") == (5.0, 45.0)
    assert parse_day_range("7") == (7.0, 7.0)
    with pytest.raises(SimulationConfigError):
        parse_day_range("soon")
    with pytest.raises(SimulationConfigError):
        build_config(chargeback_delay_days=(10.0, 2.0))


def test_prevalence_needs_some_typology() -> None:
    with pytest.raises(SimulationConfigError, match="every typology"):
        build_config(exclude=[t.value for t in SUSPICIOUS_TYPOLOGIES])
    assert build_config(prevalence=0.0, exclude=[t.value for t in SUSPICIOUS_TYPOLOGIES])


def test_run_tag_names_the_exact_configuration() -> None:
    assert SimulationConfig(seed=1).run_tag == SimulationConfig(seed=1).run_tag
    assert SimulationConfig(seed=1).run_tag != SimulationConfig(seed=2).run_tag
    assert SimulationConfig(seed=1).run_tag != build_config(seed=1, mix="structuring=2").run_tag


def test_runs_too_large_for_memory_are_refused_up_front() -> None:
    with pytest.raises(SimulationConfigError, match="in-memory limit"):
        build_config(customers=1_000_000, days=30)
