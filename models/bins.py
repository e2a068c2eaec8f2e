"""Where the numeric side path's bins go: which training rows fit them, and by which target.

The piecewise-linear encoding (``models.classifier.PiecewiseLinear``) reads a rule such as
"amount above 220" as sharply as a tree split when one of its edges sits at 220. Its edges are
the split points of a small tree fitted per feature (``fit_bin_edges``); this module chooses
the rows and the classes that tree sees.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from models.classifier import LEGITIMATE_INDEX, class_targets
from models.examples import NarrativeSet

BinsTarget = Literal["risk", "typology"]


def binning_sample(data: NarrativeSet, seed: int, legitimate: int = 50_000) -> NDArray[np.intp]:
    """Rows the side path's bins are fitted on: every suspicious row and at most
    ``legitimate`` legitimate ones (weighted back by their row weights' share)."""
    labels = data.labels
    legit = np.flatnonzero(~labels)
    if len(legit) > legitimate:
        legit = np.random.default_rng(seed).choice(legit, legitimate, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(labels), legit])).astype(np.intp)


def binning_targets(
    data: NarrativeSet, rows: NDArray[np.intp], target: BinsTarget
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The classes and weights of ``rows`` the bins are placed by.

    "risk": suspicious or not, rows weighted back to the events they stand for - edges go
    where the suspicious rate changes, and the common typologies decide where that is.
    "typology": the typology, every class's rows sharing an equal total weight - the tree
    then also splits where a rare typology lives (a terminal compromise has five scenarios
    in the quality bench's bank), which a 16-leaf tree on the overall rate leaves inside one
    bin. On that bank the side path alone ranks 0.844 against 0.796 AP with it (seeds 0-3,
    docs/models.md, "Bins placed by every typology").

    Rows of a single suspicious typology (a bank labelling fraud or not) get the "risk"
    targets under either: there is no rare typology to make room for, and on the quality
    bank two classes weighted equally placed the edges no better than the overall rate
    (0.796 against 0.821 AP, 8 numbers per feature, one seed of four at 0.693)."""
    weights = data.row_weights()[rows].astype(np.float64)
    classes = class_targets([data.typologies[i] for i in rows])
    suspicious = np.unique(classes[classes != LEGITIMATE_INDEX])
    if target == "risk" or len(suspicious) < 2:
        return (classes != LEGITIMATE_INDEX).astype(np.int64), weights
    weights /= np.bincount(classes, weights)[classes]  # each class's total to one
    return classes, weights * (len(weights) / weights.sum())
