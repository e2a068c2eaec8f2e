"""The supervisor page's plots, drawn with matplotlib (Agg) into PNG bytes."""

from __future__ import annotations

import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from stream.desk.queries import SupervisorStats

PLOTS = ("volume", "precision", "time-to-disposition")
_SIZE = (7.0, 3.2)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _empty(figure: Figure, title: str) -> bytes:
    axis = figure.add_subplot()
    axis.set_title(title)
    axis.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axis.transAxes)
    axis.set_axis_off()
    return _png(figure)


def volume(stats: SupervisorStats) -> bytes:
    figure = plt.figure(figsize=_SIZE)
    title = "Alerts and dispositions per day (last 30 days)"
    if not stats.alerts_per_day and not stats.dispositions_per_day:
        return _empty(figure, title)
    days = sorted({d.date() for d, _ in stats.alerts_per_day + stats.dispositions_per_day})
    axis = figure.add_subplot()
    xs = range(len(days))
    for offset, (series, label) in enumerate(
        ((stats.alerts_per_day, "alerts"), (stats.dispositions_per_day, "dispositions"))
    ):
        per_day = {d.date(): n for d, n in series}
        axis.bar(
            [x + offset * 0.4 for x in xs], [per_day.get(d, 0) for d in days], 0.4, label=label
        )
    step = max(1, len(days) // 10)
    axis.set_xticks([x + 0.2 for x in xs][::step])
    axis.set_xticklabels([d.strftime("%m-%d") for d in days][::step], fontsize=8)
    axis.set_title(title)
    axis.set_ylabel("per day")
    axis.legend()
    figure.autofmt_xdate()
    return _png(figure)


def precision(stats: SupervisorStats) -> bytes:
    figure = plt.figure(figsize=_SIZE)
    title = "Precision by model version and typology (final dispositions)"
    if not stats.precision:
        return _empty(figure, title)
    by_model: dict[str, dict[str, float]] = defaultdict(dict)
    typologies = sorted({t for _, t, _, _ in stats.precision})
    for model, typology, suspicious, total in stats.precision:
        by_model[model][typology] = suspicious / total
    axis = figure.add_subplot()
    width = 0.8 / max(1, len(by_model))
    for index, (model, values) in enumerate(sorted(by_model.items())):
        xs = [i + index * width for i in range(len(typologies))]
        axis.bar(xs, [values.get(t, 0.0) for t in typologies], width, label=model)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(typologies))])
    axis.set_xticklabels(typologies, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("suspicious / dispositioned")
    axis.set_title(title)
    axis.legend(title="model", fontsize=8)
    return _png(figure)


def time_to_disposition(stats: SupervisorStats) -> bytes:
    figure = plt.figure(figsize=_SIZE)
    title = "Time from alert to final disposition (last 30 days)"
    if not stats.hours_to_disposition:
        return _empty(figure, title)
    axis = figure.add_subplot()
    axis.hist(stats.hours_to_disposition, bins=30)
    axis.set_xlabel("hours")
    axis.set_ylabel("dispositions")
    axis.set_title(title)
    return _png(figure)


def draw(name: str, stats: SupervisorStats) -> bytes:
    return {"volume": volume, "precision": precision, "time-to-disposition": time_to_disposition}[
        name
    ](stats)
