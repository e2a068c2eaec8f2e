"""Population stability indices and the drift report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.trainer.drift import (
    bin_shares,
    drift_report,
    numeric_bins,
    psi,
    reference_stats,
)


def test_psi_by_hand_and_its_properties() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi([0.5, 0.5], [0.8, 0.2]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [0.8, 0.2]) > psi([0.5, 0.5], [0.6, 0.4]) > 0
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))  # empty bins are floored, not infinite


def test_bins_follow_the_reference_and_flags_get_a_bin_per_value() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=10_000)
    edges = numeric_bins(values)
    assert len(edges) == 9
    assert bin_shares(values, edges) == pytest.approx([0.1] * 10, abs=0.002)
    flags = np.array([0.0] * 90 + [1.0] * 10)
    assert numeric_bins(flags) == [1.0]
    assert bin_shares(flags, [1.0]) == pytest.approx([0.9, 0.1])
    assert bin_shares(np.array([]), [1.0]) == [0.0, 0.0]


def _sample(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, list[str]]:
    features = np.column_stack([rng.normal(shift, 1, n), rng.integers(0, 2, n)])
    texts = [
        "card payment at a grocery merchant" if rng.random() > shift / 3 else "cash deposit"
        for _ in range(n)
    ]
    return features, texts


def test_unchanged_traffic_shows_no_drift_and_shifted_traffic_does() -> None:
    rng = np.random.default_rng(1)
    names = ["amount", "flag"]
    ref_features, ref_texts = _sample(rng, 5000, 0.0)
    ref_clauses = [("event",) if "card" in t else ("event", "structuring") for t in ref_texts]
    reference = reference_stats(
        ref_features, names, ref_clauses, ref_texts, rng.beta(1, 20, 5000), model_version="v1"
    )

    same_features, same_texts = _sample(rng, 3000, 0.0)
    same_clauses = [("event",) if "card" in t else ("event", "structuring") for t in same_texts]
    calm = drift_report(
        reference, same_features, names, same_clauses, same_texts, rng.beta(1, 20, 3000)
    )
    assert calm.max_feature_psi < 0.02
    assert calm.token_psi < 0.02
    assert calm.score_psi < 0.02

    moved_features, moved_texts = _sample(rng, 3000, 1.5)
    moved_clauses = [("event",) if "card" in t else ("event", "structuring") for t in moved_texts]
    shifted = drift_report(
        reference, moved_features, names, moved_clauses, moved_texts, rng.beta(2, 5, 3000)
    )
    assert shifted.feature_psi["amount"] > 0.25
    assert shifted.feature_psi["flag"] < 0.02  # only the amount moved
    assert shifted.top_features(1) == [("amount", shifted.feature_psi["amount"])]
    assert shifted.token_psi > 0.1
    assert shifted.clause_psi > 0.1
    assert shifted.score_psi > 0.25

    no_scores = drift_report(reference, moved_features, names, moved_clauses, moved_texts, None)
    assert math.isnan(no_scores.score_psi)
    assert drift_report(reference, np.zeros((0, 2)), names, [], [], None).rows == 0
