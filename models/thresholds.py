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
    scores: NDArray[np.floating], labels: NDArray[np.bool_], threshold: float
) -> OperatingPoint:
    alerted = scores >= threshold
    n_alerts = int(alerted.sum())
    n_positive = int(labels.sum())
    true_alerts = int((alerted & labels).sum())
    return OperatingPoint(
        threshold=float(threshold),
        alert_rate=n_alerts / max(len(scores), 1),
        precision=true_alerts / n_alerts if n_alerts else 0.0,
        recall=true_alerts / n_positive if n_positive else 0.0,
    )


def threshold_for_alert_rate(scores: NDArray[np.floating], rate: float) -> float:
    """The threshold that alerts on (at most) ``rate`` of ``scores``: the k-th highest score,
    k = floor(rate × n). Ties at the threshold can only lower the rate, never raise it past the
    capacity it was sized for — except that one alert is always allowed."""
    if not 0.0 < rate <= 1.0:
        raise ModelError(f"alert rate must be in (0, 1], got {rate}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    k = max(int(np.floor(rate * len(ordered))), 1)
    threshold = float(ordered[k - 1])
    # Scores equal to the threshold are all alerted; if that overshoots, step just above.
    if k < len(ordered) and np.sum(ordered >= threshold) > k:
        above = ordered[ordered > threshold]
        threshold = float(np.nextafter(threshold, 1.0)) if len(above) else threshold
    return min(max(threshold, 0.0), 1.0)


def threshold_for_precision(
    scores: NDArray[np.floating], labels: NDArray[np.bool_], precision: float
) -> float:
    """The lowest threshold whose alerts have at least ``precision`` (most recall at that
    precision). If none reaches it, the threshold of the highest precision seen."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked_scores = np.asarray(scores, dtype=np.float64)[order]
    ranked_labels = np.asarray(labels, dtype=bool)[order]
    true_alerts = np.cumsum(ranked_labels)
    n_alerts = np.arange(1, len(ranked_scores) + 1)
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
) -> Thresholds:
    """Thresholds from validation ``scores`` and their truth ``labels`` (True: suspicious)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if len(scores) == 0 or len(scores) != len(labels):
        raise ModelError("calibration needs as many labels as scores, and at least one")
    return Thresholds(
        target=target,
        target_alert_rate=alert_rate,
        target_precision=precision,
        at_alert_rate=operating_point(scores, labels, threshold_for_alert_rate(scores, alert_rate)),
        at_precision=operating_point(
            scores, labels, threshold_for_precision(scores, labels, precision)
        ),
        calibration_events=len(scores),
    )
