"""Alert thresholds: calibrated on held-out (validation) scores, stored with the model.

Two ways to pick the threshold, matching how risk teams size their work:

* ``alert_rate``: alert on a fixed share of events (e.g. 1 %) — the analysts' capacity;
* ``precision``: the lowest threshold whose alerts are at least this precise on validation —
  "at most one false alarm per true case", whatever the volume.

Both thresholds are computed and stored, whichever one is the operating one, so an operator can
see what the other would have meant.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from models.errors import ModelError

TargetKind = Literal["alert_rate", "precision"]


class OperatingPoint(BaseModel):
    """What a threshold did on the calibration scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(ge=0.0, le=1.0)
    alert_rate: float = Field(ge=0.0, le=1.0, description="Share of events alerted.")
    precision: float = Field(ge=0.0, le=1.0, description="Share of alerts that are suspicious.")
    recall: float = Field(ge=0.0, le=1.0, description="Share of suspicious events alerted.")


class Thresholds(BaseModel):
    """Stored as ``thresholds.json`` beside a model's weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: TargetKind = Field(description="Which target sets the operating threshold.")
    target_alert_rate: float = Field(gt=0.0, le=1.0)
    target_precision: float = Field(gt=0.0, le=1.0)
    at_alert_rate: OperatingPoint
    at_precision: OperatingPoint = Field(
        description="If no threshold reaches the target precision, the most precise one."
    )
    calibration_events: int = Field(ge=1, description="Validation events calibrated on.")

    @property
    def alert_threshold(self) -> float:
        point = self.at_alert_rate if self.target == "alert_rate" else self.at_precision
        return point.threshold


def operating_point(
    scores: NDArray[np.floating],
    labels: NDArray[np.bool_],
    threshold: float,
    weights: NDArray[np.floating] | None = None,
) -> OperatingPoint:
    """Alert rate, precision and recall when alerting on ``scores >= threshold``. ``weights``
    count each event that many times (a subsample weighted back to the full population)."""
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    alerted = scores >= threshold
    alerts = float(w[alerted].sum())
    positives = float(w[labels].sum())
    true_alerts = float(w[alerted & labels].sum())
    return OperatingPoint(
        threshold=float(threshold),
        alert_rate=alerts / max(float(w.sum()), 1e-12),
        precision=true_alerts / alerts if alerts else 0.0,
        recall=true_alerts / positives if positives else 0.0,
    )


def threshold_for_alert_rate(
    scores: NDArray[np.floating], rate: float, weights: NDArray[np.floating] | None = None
) -> float:
    """The lowest threshold that alerts on at most ``rate`` of the (weighted) events. A
    threshold alerts on all events tied at it, so ties can only lower the rate, never push it
    past the capacity it was sized for — except that the top-scoring events are always
    alerted, so some threshold exists."""
    if not 0.0 < rate <= 1.0:
        raise ModelError(f"alert rate must be in (0, 1], got {rate}")
    scores = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ranked, cumulative = scores[order], np.cumsum(w[order])
    # Cuts between distinct scores are the only thresholds that exist.
    is_cut = np.append(ranked[1:] != ranked[:-1], True)
    within = np.flatnonzero(is_cut & (cumulative <= rate * cumulative[-1] * (1 + 1e-12)))
    last = within[-1] if len(within) else int(np.flatnonzero(is_cut)[0])
    return float(ranked[last])


def threshold_for_precision(
    scores: NDArray[np.floating],
    labels: NDArray[np.bool_],
    precision: float,
    weights: NDArray[np.floating] | None = None,
) -> float:
    """The lowest threshold whose alerts have at least ``precision`` (most recall at that
    precision). If none reaches it, the threshold of the highest precision seen."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked_scores = np.asarray(scores, dtype=np.float64)[order]
    ranked_labels = np.asarray(labels, dtype=bool)[order]
    w = np.ones(len(order)) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    true_alerts = np.cumsum(ranked_labels * w)
    n_alerts = np.cumsum(w)
    # Only the last of a run of equal scores is a real cut: a threshold alerts on all ties.
    is_cut = np.append(ranked_scores[1:] != ranked_scores[:-1], True)
    precisions = np.where(is_cut, true_alerts / n_alerts, -1.0)
    reaching = np.flatnonzero(precisions >= precision)
    best = reaching[-1] if len(reaching) else int(np.argmax(precisions))
    return float(ranked_scores[best])


def calibrate(
    scores: NDArray[np.floating],
    labels: NDArray[np.bool_],
    *,
    target: TargetKind = "alert_rate",
    alert_rate: float = 0.01,
    precision: float = 0.5,
    weights: NDArray[np.floating] | None = None,
) -> Thresholds:
    """Thresholds from validation ``scores`` and their truth ``labels`` (True: suspicious);
    ``weights`` when the validation events are a weighted subsample."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if len(scores) == 0 or len(scores) != len(labels):
        raise ModelError("calibration needs as many labels as scores, and at least one")
    return Thresholds(
        target=target,
        target_alert_rate=alert_rate,
        target_precision=precision,
        at_alert_rate=operating_point(
            scores, labels, threshold_for_alert_rate(scores, alert_rate, weights), weights
        ),
        at_precision=operating_point(
            scores, labels, threshold_for_precision(scores, labels, precision, weights), weights
        ),
        calibration_events=len(scores),
    )
