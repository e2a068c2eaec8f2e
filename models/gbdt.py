"""The honest baseline: gradient-boosted trees (LightGBM) on the same per-event context
features the narratives are built from, the same time split and the same metrics.

It answers "does reading a narrative add anything over the numbers behind it?". It is a binary
model (suspicious or not) because the comparison is on the risk score; per-typology recall is
measured from that score exactly as for the Transformer.

Class imbalance is left to the ranking metric: no reweighting of the suspicious class, early
stopping on validation average precision (the headline metric), as for the Transformer;
leaves need 40 events, each tree sees 70 % of the features, L2 5. Weighting suspicious
events by legitimate/suspicious made every leaf chase single frauds once the story and
counterparty features were added (measured in docs/models.md, "A fair GBDT"). The baseline
must be as strong as trees fairly can be: the Transformer is judged against it.
The booster is kept in LightGBM's own text format when saved — never pickled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray

from models.errors import TrainingError


@dataclass
class GbdtModel:
    booster: lgb.Booster
    feature_names: tuple[str, ...]
    best_iteration: int
    train_seconds: float

    def predict(self, features: NDArray[np.floating]) -> NDArray[np.float64]:
        scores = self.booster.predict(
            np.asarray(features, dtype=np.float64), num_iteration=self.best_iteration
        )
        return np.asarray(scores, dtype=np.float64)

    def save(self, path: Path) -> None:
        self.booster.save_model(str(path), num_iteration=self.best_iteration)


def train_gbdt(
    train_x: NDArray[np.floating],
    train_y: NDArray[np.bool_],
    valid_x: NDArray[np.floating],
    valid_y: NDArray[np.bool_],
    *,
    feature_names: tuple[str, ...],
    valid_weights: NDArray[np.floating] | None = None,
    seed: int = 0,
    num_boost_round: int = 2000,
    early_stopping_rounds: int = 100,
    threads: int | None = None,
) -> GbdtModel:
    positives = int(np.sum(train_y))
    if positives == 0 or positives == len(train_y):
        raise TrainingError("the GBDT training split needs suspicious and legitimate events")
    params = {
        "objective": "binary",
        "metric": "average_precision",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 5.0,
        "seed": seed,
        "deterministic": True,
        "num_threads": threads or 0,
        "verbosity": -1,
    }
    names = [name.replace(" ", "_") for name in feature_names]
    train_set = lgb.Dataset(np.asarray(train_x, np.float64), label=train_y, feature_name=names)
    valid_set = lgb.Dataset(
        np.asarray(valid_x, np.float64), label=valid_y, weight=valid_weights, reference=train_set
    )
    started = time.perf_counter()
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    return GbdtModel(
        booster=booster,
        feature_names=feature_names,
        best_iteration=int(booster.best_iteration or num_boost_round),
        train_seconds=time.perf_counter() - started,
    )
