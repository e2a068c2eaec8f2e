"""Where the side path's bins go (models.bins): a rare typology's band gets its own edges."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch

from models.bins import BinsTarget, binning_targets
from models.classifier import class_targets, fit_bin_edges
from models.examples import NarrativeSet
from schemas import Typology


def one_feature_bank() -> NarrativeSet:
    """Legitimate amounts spread over 0-100 (each row standing for ten events), a common
    typology at 90-100 and a rare one (40 events) in the narrow band 40-42."""
    rng = np.random.default_rng(0)
    parts = [
        (Typology.LEGITIMATE, rng.uniform(0, 100, 20_000), 10.0),
        (Typology.STRUCTURING, rng.uniform(90, 100, 400), 1.0),
        (Typology.COMPROMISED_TERMINAL, rng.uniform(40, 42, 40), 1.0),
    ]
    typologies = [t for t, x, _ in parts for _ in x]
    n = len(typologies)
    return NarrativeSet(
        event_ids=[f"ev-{i}" for i in range(n)],
        days=[date(2025, 1, 1)] * n,
        texts=[""] * n,
        clauses=[[] for _ in range(n)],
        features=np.concatenate([x for _, x, _ in parts]).astype(np.float32)[:, None],
        typologies=typologies,
        weights=np.concatenate([np.full(len(x), w) for _, x, w in parts]),
    )


def edges_for(data: NarrativeSet, target: BinsTarget) -> np.ndarray:
    classes, weights = binning_targets(data, np.arange(len(data)), target)
    edges = fit_bin_edges(
        torch.from_numpy(data.features), torch.from_numpy(classes), torch.from_numpy(weights), 4
    )
    return edges[0].numpy()


def test_typology_bins_give_a_rare_typology_its_own_band_where_risk_bins_do_not() -> None:
    data = one_feature_bank()
    # by the overall suspicious rate, the common typology takes every split
    risk = edges_for(data, "risk")
    assert not np.any((risk > 35) & (risk < 47))
    assert np.any(np.abs(risk - 90) < 0.5)
    # with every class weighted equally, the rare band is cut out at both ends, and the
    # common typology keeps its edge
    typology = edges_for(data, "typology")
    assert np.any(np.abs(typology - 40) < 0.5)
    assert np.any(np.abs(typology - 42) < 0.5)
    assert np.any(np.abs(typology - 90) < 0.5)


@pytest.mark.parametrize("target", ["risk", "typology"])
def test_binning_targets_classes_and_weights(target: BinsTarget) -> None:
    data = one_feature_bank()
    rows = np.arange(0, len(data), 3)
    classes, weights = binning_targets(data, rows, target)
    typologies = [data.typologies[i] for i in rows]
    if target == "risk":
        np.testing.assert_array_equal(classes, data.labels[rows])
        np.testing.assert_allclose(weights, data.row_weights()[rows])
        return
    np.testing.assert_array_equal(classes, class_targets(typologies))
    # every class the same total weight, the mean weight one
    totals = [weights[classes == c].sum() for c in np.unique(classes)]
    np.testing.assert_allclose(totals, [len(rows) / 3] * 3)
    assert np.isclose(weights.mean(), 1.0)


def test_one_suspicious_typology_is_binned_by_the_risk() -> None:
    """A bank labelling fraud or not: nothing to balance among, the overall rate's bins."""
    data = one_feature_bank()
    rows = np.flatnonzero([t is not Typology.COMPROMISED_TERMINAL for t in data.typologies])
    one_typology = data.subset(rows)
    everything = np.arange(len(one_typology))
    classes, weights = binning_targets(one_typology, everything, "typology")
    risk_classes, risk_weights = binning_targets(one_typology, everything, "risk")
    np.testing.assert_array_equal(classes, risk_classes)
    np.testing.assert_array_equal(weights, risk_weights)
    np.testing.assert_array_equal(classes, one_typology.labels)
