"""Evaluation: the metrics every model (Transformer or GBDT baseline) is reported with, and PNG
plots of its scores.

* ``average_precision`` (PR-AUC): the headline — with ~1 % suspicious events, ROC-AUC flatters
  any model, while average precision moves with what analysts feel (false alarms per case).
* ``roc_auc``, for comparison with the literature.
* ``recall_at_budget``: share of suspicious events caught when alerting on the top
  ``alert_budget`` share of events (the analysts' capacity).
* ``recall_at_precision``: the most recall at which alerts are still ``target_precision``
  precise.
* ``per_typology_recall``: at the budget threshold, which typologies are caught and which are
  missed; ``typology_accuracy``: for caught suspicious events, how often the predicted
  typology is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from models.errors import ModelError
from models.thresholds import operating_point, threshold_for_alert_rate
from schemas import Typology


class EvalReport(BaseModel):
    """Metrics of one model on one set of events (written as ``metrics.json``)."""

    model_config = ConfigDict(extra="forbid")

    events: int
    suspicious: int
    prevalence: float
    average_precision: float
    roc_auc: float
    alert_budget: float = Field(description="Share of events alerted for recall_at_budget.")
    recall_at_budget: float
    precision_at_budget: float
    target_precision: float
    recall_at_precision: float
    per_typology_recall: dict[str, float] = Field(description="At the budget threshold.")
    per_typology_count: dict[str, int]
    typology_accuracy: float | None = Field(
        None, description="Caught suspicious events whose typology was predicted right."
    )

    def lines(self) -> list[str]:
        """A human-readable summary (``riskstream model eval`` prints it)."""
        out = [
            f"events {self.events:,}, suspicious {self.suspicious:,} "
            f"(prevalence {self.prevalence:.4f})",
            f"PR-AUC (average precision)  {self.average_precision:.4f}",
            f"ROC-AUC                     {self.roc_auc:.4f}",
            f"recall @ {self.alert_budget:.1%} alert budget   {self.recall_at_budget:.4f} "
            f"(precision {self.precision_at_budget:.4f})",
            f"recall @ precision {self.target_precision:.2f}     {self.recall_at_precision:.4f}",
        ]
        if self.typology_accuracy is not None:
            out.append(f"typology accuracy (caught)  {self.typology_accuracy:.4f}")
        out.append("per-typology recall at the budget threshold:")
        for typology, recall in sorted(self.per_typology_recall.items()):
            count = self.per_typology_count[typology]
            out.append(f"  {typology:<24} {recall:.3f}  (n={count})")
        return out


def recall_at_precision(
    scores: NDArray[np.floating],
    labels: NDArray[np.bool_],
    precision: float,
    weights: NDArray[np.floating] | None = None,
) -> float:
    """The largest recall among thresholds whose precision is at least ``precision``."""
    precisions, recalls, _ = precision_recall_curve(labels, scores, sample_weight=weights)
    reaching = recalls[precisions >= precision]
    return float(reaching.max()) if len(reaching) else 0.0


def evaluate(
    scores: NDArray[np.floating],
    true_typologies: Sequence[Typology],
    predicted_typologies: Sequence[Typology] | None = None,
    *,
    alert_budget: float = 0.01,
    target_precision: float = 0.5,
    weights: NDArray[np.floating] | None = None,
) -> EvalReport:
    """Metrics of ``scores`` (higher = riskier) against the events' true typologies.

    ``weights`` evaluate a subsample as the population it was drawn from (e.g. every
    suspicious event plus 10 % of legitimate ones, weighted 10): every metric is computed with
    them, so the estimates stay unbiased while a slow model scores far fewer events."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.array([t.value for t in true_typologies])
    labels = truth != Typology.LEGITIMATE.value
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    if len(scores) != len(truth) or len(scores) == 0:
        raise ModelError("evaluation needs one true typology per score, and at least one")
    if labels.all() or not labels.any():
        raise ModelError("evaluation needs both suspicious and legitimate events")
    threshold = threshold_for_alert_rate(scores, alert_budget, weights)
    at_budget = operating_point(scores, labels, threshold, weights)
    alerted = scores >= threshold

    per_recall: dict[str, float] = {}
    per_count: dict[str, int] = {}
    for typology in sorted(set(truth[labels])):
        members = truth == typology
        per_count[typology] = int(members.sum())
        per_recall[typology] = float(
            np.average(alerted[members], weights=None if weights is None else weights[members])
        )

    typology_accuracy = None
    if predicted_typologies is not None:
        predicted = np.array([t.value for t in predicted_typologies])
        caught = labels & alerted
        if caught.any():
            typology_accuracy = float((predicted[caught] == truth[caught]).mean())

    return EvalReport(
        events=len(scores),
        suspicious=int(labels.sum()),
        prevalence=float(np.average(labels, weights=weights)),
        average_precision=float(average_precision_score(labels, scores, sample_weight=weights)),
        roc_auc=float(roc_auc_score(labels, scores, sample_weight=weights)),
        alert_budget=alert_budget,
        recall_at_budget=at_budget.recall,
        precision_at_budget=at_budget.precision,
        target_precision=target_precision,
        recall_at_precision=recall_at_precision(scores, labels, target_precision, weights),
        per_typology_recall=per_recall,
        per_typology_count=per_count,
        typology_accuracy=typology_accuracy,
    )


def write_plots(
    scores: NDArray[np.floating],
    true_typologies: Sequence[Typology],
    out_dir: Path,
    *,
    title: str = "",
    threshold: float | None = None,
) -> list[Path]:
    """PR curve and score histograms by class as PNGs in ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, dtype=np.float64)
    truth = np.array([t.value for t in true_typologies])
    labels = truth != Typology.LEGITIMATE.value
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "pr_curve.png", out_dir / "score_histogram.png"]

    precisions, recalls, _ = precision_recall_curve(labels, scores)
    figure, axes = plt.subplots(figsize=(6, 5))
    axes.plot(
        recalls, precisions, lw=1.5, label=f"AP {average_precision_score(labels, scores):.3f}"
    )
    axes.axhline(labels.mean(), color="grey", ls="--", lw=1, label="constant predictor")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(f"Precision-recall {title}".strip())
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(paths[0], dpi=110)
    plt.close(figure)

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    bins = np.linspace(0.0, 1.0, 51)
    top.hist(scores[~labels], bins=bins, alpha=0.7, label="legitimate", color="tab:blue")
    top.hist(scores[labels], bins=bins, alpha=0.7, label="suspicious", color="tab:red")
    top.set_yscale("log")
    top.set(ylabel="events (log)")
    top.legend()
    for typology in sorted(set(truth[labels])):
        bottom.hist(scores[truth == typology], bins=bins, histtype="step", lw=1.3, label=typology)
    bottom.set(xlabel="risk score", ylabel="suspicious events")
    bottom.legend(fontsize=7, ncol=2)
    if threshold is not None:
        for axis in (top, bottom):
            axis.axvline(threshold, color="black", ls=":", lw=1)
    top.set_title(f"Score distribution by class {title}".strip())
    figure.tight_layout()
    figure.savefig(paths[1], dpi=110)
    plt.close(figure)
    return paths
