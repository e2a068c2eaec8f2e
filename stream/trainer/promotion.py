"""The promotion decision, as a pure function of both models' metrics on one holdout.

A challenger replaces the champion only if

1. it is better on ``trainer.promotion_metric`` (average precision by default) by more than
   ``trainer.min_improvement``, **and**
2. its precision at *its own* alert threshold is at most ``trainer.max_precision_loss`` below
   the champion's precision at *the champion's own* threshold.

Each model is judged at the threshold it would alert at in production, because that is what
analysts would feel: a model with a better ranking that, at its calibrated threshold, buries
them in false alarms is not an improvement. Anything undefined (a holdout without both
classes) rejects: no evidence, no change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, roc_auc_score

Metric = Literal["average_precision", "roc_auc"]


@dataclass(frozen=True)
class HoldoutMetrics:
    """One model on the holdout cases."""

    cases: int
    suspicious: int
    average_precision: float
    roc_auc: float
    alert_threshold: float
    alerted: int
    precision_at_threshold: float
    """Share of the alerted holdout cases that are suspicious (0 when nothing is alerted)."""
    recall_at_threshold: float

    def value(self, metric: Metric) -> float:
        return float(getattr(self, metric))

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def holdout_metrics(
    scores: NDArray[np.floating], labels: NDArray[np.bool_], threshold: float
) -> HoldoutMetrics:
    """Metrics of ``scores`` against ``labels`` (True: suspicious), alerting at ``threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    both_classes = bool(labels.any() and not labels.all())
    alerted = scores >= threshold
    n_alerted = int(alerted.sum())
    true_alerts = int((alerted & labels).sum())
    positives = int(labels.sum())
    return HoldoutMetrics(
        cases=len(scores),
        suspicious=positives,
        average_precision=float(average_precision_score(labels, scores))
        if both_classes
        else math.nan,
        roc_auc=float(roc_auc_score(labels, scores)) if both_classes else math.nan,
        alert_threshold=float(threshold),
        alerted=n_alerted,
        precision_at_threshold=true_alerts / n_alerted if n_alerted else 0.0,
        recall_at_threshold=true_alerts / positives if positives else 0.0,
    )


@dataclass(frozen=True)
class Promotion:
    promote: bool
    reason: str


def decide(
    champion: HoldoutMetrics,
    challenger: HoldoutMetrics,
    *,
    metric: Metric,
    max_precision_loss: float,
    min_improvement: float = 0.0,
) -> Promotion:
    """Promote or not, and why, in one line an operator can read (see the module docstring)."""
    if champion.cases != challenger.cases or champion.suspicious != challenger.suspicious:
        return Promotion(False, "the models were not evaluated on the same holdout")
    ours, theirs = challenger.value(metric), champion.value(metric)
    if math.isnan(ours) or math.isnan(theirs):
        return Promotion(False, f"{metric} is undefined on this holdout (one class only)")
    if ours <= theirs + min_improvement:
        return Promotion(
            False,
            f"{metric} {ours:.4f} is not better than the champion's {theirs:.4f}"
            + (f" by more than {min_improvement:g}" if min_improvement else ""),
        )
    floor = champion.precision_at_threshold - max_precision_loss
    if challenger.precision_at_threshold < floor:
        return Promotion(
            False,
            f"{metric} {ours:.4f} beats {theirs:.4f}, but precision at its alert threshold "
            f"{challenger.precision_at_threshold:.4f} is below the champion's "
            f"{champion.precision_at_threshold:.4f} minus the allowed {max_precision_loss:g}",
        )
    return Promotion(
        True,
        f"{metric} {ours:.4f} > {theirs:.4f}; precision at alert threshold "
        f"{challenger.precision_at_threshold:.4f} vs {champion.precision_at_threshold:.4f} "
        f"(allowed loss {max_precision_loss:g})",
    )
