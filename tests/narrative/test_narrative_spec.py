"""NarrativeSpec: quantile edges fitted on training rows, versioning, JSON, the default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.features import FEATURE_NAMES
from schemas.narrative import TEMPLATE_VERSION, NarrativeSpec, SpecError, default_spec, fit_spec
from schemas.narrative.spec import LEVELED, MIN_ROWS_TO_FIT

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def training_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, len(FEATURE_NAMES)))
    rows[:, COL["amount_usd"]] = rng.lognormal(3.5, 1.3, n)
    rows[:, COL["baseline_count"]] = rng.integers(0, 50, n)
    rows[:, COL["amount_zscore"]] = rng.normal(0, 1.2, n)
    rows[:, COL["out_count_1h"]] = rng.integers(1, 5, n)
    rows[:, COL["out_sum_1h"]] = rng.lognormal(4, 1, n)
    rows[:, COL["out_count_24h"]] = rng.integers(1, 9, n)
    rows[:, COL["out_sum_24h"]] = rng.lognormal(5, 1, n)
    rows[:, COL["cp_customers_7d"]] = rng.integers(1, 400, n)
    rows[:, COL["cp_fraud_labels_30d"]] = rng.integers(0, 3, n)
    rows[:, COL["cp_fraud_rate_30d"]] = rng.uniform(0, 0.2, n)
    rows[:, COL["cp_mature_fraud_7d"]] = rng.integers(0, 3, n)
    rows[:, COL["cp_mature_rate_7d"]] = rng.uniform(0, 0.3, n)
    return rows


def test_edges_are_the_quantiles_of_the_applicable_training_rows() -> None:
    rows = training_rows(5000)
    spec = fit_spec(rows)
    assert spec.fitted_rows == 5000
    for leveled in LEVELED:
        values = rows[:, COL[leveled.feature]]
        if leveled.applies_to:
            values = values[rows[:, COL[leveled.applies_to]] >= leveled.applies_at]
        if len(values) < MIN_ROWS_TO_FIT:
            assert spec.edges[leveled.feature] == default_spec().edges[leveled.feature]
            continue
        expected = np.float32(np.quantile(values, leveled.quantiles))
        assert spec.edges[leveled.feature] == pytest.approx(tuple(expected))
    # a level word means a share of traffic: about 10% of amounts fall in the lowest bucket
    levels = [spec.level("amount_usd", v) for v in rows[:, COL["amount_usd"]]]
    assert levels.count(0) / len(levels) == pytest.approx(0.10, abs=0.01)
    assert max(levels) == len(spec.edges["amount_usd"])


def test_too_few_or_tied_rows_keep_the_default_edges() -> None:
    rows = training_rows(MIN_ROWS_TO_FIT - 1)
    assert fit_spec(rows).edges == default_spec().edges
    tied = training_rows(2000)
    tied[:, COL["cp_customers_7d"]] = 1.0  # no spread: quantiles tie
    spec = fit_spec(tied)
    assert spec.edges["cp_customers_7d"] == default_spec().edges["cp_customers_7d"]
    assert spec.edges["amount_usd"] != default_spec().edges["amount_usd"]


def test_version_names_the_template_and_the_edges(tmp_path: Path) -> None:
    a, b = fit_spec(training_rows(3000, seed=1)), fit_spec(training_rows(3000, seed=2))
    assert a.version != b.version
    assert a.version.startswith(TEMPLATE_VERSION + ".")
    path = tmp_path / "spec.json"
    path.write_text(a.to_json(), encoding="utf-8")
    loaded = NarrativeSpec.from_json(path.read_bytes())
    assert loaded == a
    assert loaded.version == a.version


def test_a_spec_for_another_template_or_tampered_edges_is_refused() -> None:
    text = default_spec().to_json()
    with pytest.raises(SpecError, match="template"):
        NarrativeSpec.from_json(text.replace(f'"{TEMPLATE_VERSION}"', '"n0"'))
    with pytest.raises(SpecError, match="hash"):
        NarrativeSpec.from_json(text.replace("5000.0", "5001.0"))
    with pytest.raises(SpecError, match="increasing"):
        NarrativeSpec(edges={**default_spec().edges, "amount_usd": (5.0, 4.0, 6.0, 7.0, 8.0)})
    with pytest.raises(SpecError):
        fit_spec([[1.0, 2.0]])


def test_the_shipped_default_spec_loads() -> None:
    spec = default_spec()
    assert spec.fitted_rows == 0
    assert {leveled.feature for leveled in LEVELED} == set(spec.edges)
