"""The report's plots as PNG bytes (matplotlib, Agg backend: no display needed).

The single-run PR curve and score histograms are ``models.evaluate.write_plots`` - the plots
every model evaluation shows - so a backtest reads like the model's own evaluation; the rest
(alerts over time, per-typology recall, and the overlays of a comparison) are drawn here.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from schemas import Typology
from stream.backtest.report import BacktestReport

_DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=_DPI)
    plt.close(figure)
    return buffer.getvalue()


def evaluation_plots(
    scores: NDArray[np.float64], truth: Sequence[Typology], threshold: float, title: str
) -> dict[str, bytes]:
    """PR curve and score histograms by class (``models.evaluate.write_plots``); empty when
    the run lacks suspicious or legitimate events (neither plot means anything then)."""
    labels = np.array([t is not Typology.LEGITIMATE for t in truth], dtype=np.bool_)
    if not labels.any() or labels.all():
        return {}
    from models.evaluate import write_plots

    with tempfile.TemporaryDirectory() as folder:
        pr_path, histogram_path = write_plots(
            scores, truth, Path(folder), title=title, threshold=threshold
        )
        return {"pr_curve": pr_path.read_bytes(), "score_histogram": histogram_path.read_bytes()}


def pr_curves(runs: Sequence[tuple[str, NDArray[np.bool_], NDArray[np.float64]]]) -> bytes:
    """Precision-recall curves of several runs on one plot (label, suspicious, scores)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, labels, scores in runs:
        if not labels.any():
            continue
        precision, recall, _ = precision_recall_curve(labels, scores)
        ap = average_precision_score(labels, scores)
        axes.plot(recall, precision, lw=1.5, label=f"{name} (AP {ap:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Precision-recall")
    axes.legend(loc="upper right", fontsize=8)
    return _png(figure)


def alerts_over_time(reports: Sequence[BacktestReport]) -> bytes:
    """Alerts per day: true and false positives stacked, one bar group per run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(reports))
    days = sorted({row.day for report in reports for row in report.per_day})
    positions = {day: i for i, day in enumerate(days)}
    for k, report in enumerate(reports):
        x = np.array([positions[r.day] for r in report.per_day], dtype=np.float64)
        x += (k - (len(reports) - 1) / 2) * width
        true_pos = np.array([r.true_positives for r in report.per_day])
        false_pos = np.array([r.alerts - r.true_positives for r in report.per_day])
        tag = f"{report.run_id}: " if len(reports) > 1 else ""
        axes.bar(x, true_pos, width, color=f"C{2 * k}", label=f"{tag}true positives")
        axes.bar(
            x,
            false_pos,
            width,
            bottom=true_pos,
            color=f"C{2 * k + 1}",
            alpha=0.7,
            label=f"{tag}false positives",
        )
    step = max(1, len(days) // 15)
    axes.set_xticks(range(0, len(days), step))
    axes.set_xticklabels([days[i].isoformat() for i in range(0, len(days), step)], rotation=45)
    axes.set(ylabel="alerts", title="Alerts per day (event time, UTC)")
    axes.legend(fontsize=8)
    return _png(figure)


def typology_recall(reports: Sequence[BacktestReport]) -> bytes:
    """Recall per true typology, one bar per run."""
    plt = _pyplot()
    names = sorted({row.typology for report in reports for row in report.per_typology})
    figure, axes = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(names)) * len(reports)))
    height = 0.8 / max(1, len(reports))
    for k, report in enumerate(reports):
        by_name = {row.typology: row for row in report.per_typology}
        y = np.arange(len(names)) + (k - (len(reports) - 1) / 2) * height
        recalls = [by_name[n].recall if n in by_name else 0.0 for n in names]
        bars = axes.barh(y, recalls, height, label=report.run_id, color=f"C{k}")
        for bar, name in zip(bars, names, strict=True):
            row = by_name.get(name)
            if row is not None:
                axes.text(
                    bar.get_width() + 0.01,
                    bar.get_y() + bar.get_height() / 2,
                    f"{row.alerted}/{row.events}",
                    va="center",
                    fontsize=7,
                )
    axes.set_yticks(range(len(names)))
    axes.set_yticklabels(names)
    axes.invert_yaxis()
    axes.set(xlim=(0, 1.15), xlabel="recall (alerted / events)", title="Recall per typology")
    if len(reports) > 1:
        axes.legend(fontsize=8)
    return _png(figure)
