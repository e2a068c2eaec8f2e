"""Self-contained HTML for a backtest report or a comparison of two runs.

One file, no external assets: plots are embedded as base64 PNGs and the styling is inline, so a
report can be mailed or attached to a ticket and still open anywhere. Every value from the run
(ids, typologies) is HTML-escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Literal

from stream.backtest.report import BacktestReport, Percentiles

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots img { max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
"""

PLOT_TITLES = {
    "pr_curve": "Precision-recall curve",
    "score_histogram": "Score histograms by class",
    "alerts_over_time": "Alerts over time",
    "typology_recall": "Recall per typology",
}


Kind = Literal["auto", "count", "ms", "hours", "share"]
"""How a number reads: ``count`` whole (a median of counts may be x.5), ``ms`` to 0.1 ms
below 100 ms and whole above, ``hours`` to 0.01, ``share`` (rates, scores) to 4 digits;
``auto``: ints as counts, other floats as shares."""


class _Cell(str):
    """Already formatted and escaped (a row whose cells have different kinds)."""

    __slots__ = ()


def _fmt(value: object, kind: Kind = "auto") -> str:
    if isinstance(value, _Cell):
        return value
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(str(value))
    if kind == "count" or (kind == "auto" and isinstance(value, int)):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    if kind == "ms":
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if kind == "hours":
        return f"{value:,.2f}"
    return f"{value:.4f}"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[object]], kinds: Sequence[Kind] = ()
) -> str:
    """``kinds[i]`` formats column i (``auto`` for columns beyond it)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)

    def cell(i: int, value: object) -> str:
        return f"<td>{_fmt(value, kinds[i] if i < len(kinds) else 'auto')}</td>"

    body = "".join(
        "<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    title = escape(PLOT_TITLES.get(name, name))
    return f'<figure><img alt="{title}" src="data:image/png;base64,{data}"></figure>'


def _plots(images: Mapping[str, bytes]) -> str:
    if not images:
        return '<p class="note">No plots: the run has no suspicious or no legitimate events.</p>'
    return '<div class="plots">' + "".join(_image(n, p) for n, p in images.items()) + "</div>"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


HEADLINE: list[tuple[str, Callable[[BacktestReport], object]]] = [
    ("model version", lambda r: r.model_version),
    ("alert threshold", lambda r: r.alert_threshold),
    ("truth", lambda r: r.truth_source),
    ("events scored", lambda r: r.events),
    ("suspicious events", lambda r: r.suspicious),
    ("events without truth (legitimate)", lambda r: r.unmatched),
    ("alerts", lambda r: r.alerts),
    ("true positives", lambda r: r.true_positives),
    ("false positives", lambda r: r.false_positives),
    ("precision", lambda r: r.precision),
    ("recall", lambda r: r.recall),
    ("PR-AUC (average precision)", lambda r: r.average_precision),
    ("typology accuracy (caught)", lambda r: r.typology_accuracy),
    ("days", lambda r: r.days),
    ("alerts per day", lambda r: r.alerts_per_day),
    ("scenarios (≥ 2 events)", lambda r: r.time_to_detect.scenarios),
    ("scenarios detected", lambda r: r.time_to_detect.detected),
    ("detection rate", lambda r: r.time_to_detect.detection_rate),
    ("median events to detect", lambda r: r.time_to_detect.median_events),
    ("mean events to detect", lambda r: r.time_to_detect.mean_events),
    ("median hours to detect", lambda r: r.time_to_detect.median_hours),
]


HEADLINE_KINDS: dict[str, Kind] = {
    "alerts per day": "count",
    "median events to detect": "count",
    "mean events to detect": "count",
    "median hours to detect": "hours",
}


def _headline_rows(*reports: BacktestReport) -> list[list[object]]:
    """One row per headline figure: its name, then each report's value, formatted."""
    return [
        [name, *(_Cell(_fmt(get(r), HEADLINE_KINDS.get(name, "auto"))) for r in reports)]
        for name, get in HEADLINE
    ]


def _latency_rows(latency: Mapping[str, Percentiles]) -> list[list[object]]:
    return [
        [name.replace("_", " "), p.count, p.p50, p.p90, p.p99, p.max] for name, p in latency.items()
    ]


def render_report(report: BacktestReport, images: Mapping[str, bytes]) -> str:
    ttd = report.time_to_detect
    sections = [
        "<h2>Summary</h2>",
        _table(["figure", "value"], _headline_rows(report)),
        "<h2>Plots</h2>",
        _plots(images),
        "<h2>Per typology</h2>",
        _table(
            ["typology", "events", "alerted", "recall"],
            [[t.typology, t.events, t.alerted, t.recall] for t in report.per_typology],
            ["auto", "count", "count", "share"],
        ),
        "<h2>Time to detect</h2>",
        '<p class="note">Events into a scenario (replay order) when its first alert fires; '
        "scenarios with at least two suspicious events.</p>",
        _table(
            ["typology", "scenarios", "median events", "p90 events", "max events"],
            [[t, p.count, p.p50, p.p90, p.max] for t, p in ttd.per_typology.items()],
            ["auto", "count", "count", "count", "count"],
        ),
        _table(
            ["scenario", "typology", "events", "first alert at event", "hours to detect"],
            [
                [s.scenario_id, s.typology, s.events, s.first_alert_event, s.hours_to_detect]
                for s in ttd.per_scenario
            ],
            ["auto", "auto", "count", "count", "hours"],
        ),
        "<h2>Latency (ms)</h2>",
        _table(
            ["step", "count", "p50", "p90", "p99", "max"],
            _latency_rows(report.latency_ms),
            ["auto", "count", "ms", "ms", "ms", "ms"],
        ),
        "<h2>Per day</h2>",
        _table(
            ["day (UTC)", "events", "alerts", "true positives"],
            [[d.day.isoformat(), d.events, d.alerts, d.true_positives] for d in report.per_day],
            ["auto", "count", "count", "count"],
        ),
    ]
    return _page(f"Backtest {report.run_id}", "".join(sections))


def render_comparison(
    first: BacktestReport,
    second: BacktestReport,
    images: Mapping[str, bytes],
    overlap: Mapping[str, int],
) -> str:
    def delta(a: object, b: object) -> object:
        if isinstance(a, int | float) and isinstance(b, int | float):
            return b - a
        return None

    rows = []
    for name, get in HEADLINE:
        a, b = get(first), get(second)
        kind = HEADLINE_KINDS.get(name, "auto")
        rows.append([name, *(_Cell(_fmt(v, kind)) for v in (a, b, delta(a, b)))])
    typologies = sorted({t.typology for r in (first, second) for t in r.per_typology})
    recall_a = {t.typology: t for t in first.per_typology}
    recall_b = {t.typology: t for t in second.per_typology}
    typology_rows = []
    for name in typologies:
        a_row, b_row = recall_a.get(name), recall_b.get(name)
        a_recall = a_row.recall if a_row else None
        b_recall = b_row.recall if b_row else None
        typology_rows.append([name, a_recall, b_recall, delta(a_recall, b_recall)])
    latency_rows = [
        [step, first.latency_ms[step].p50, second.latency_ms[step].p50]
        for step in first.latency_ms
        if step in second.latency_ms
    ]
    sections = [
        '<p class="note">'
        f"Events in both runs: {overlap.get('both', 0):,}; only in {escape(first.run_id)}: "
        f"{overlap.get('only_first', 0):,}; only in {escape(second.run_id)}: "
        f"{overlap.get('only_second', 0):,}. Figures are comparable when both runs replayed "
        "the same events.</p>",
        "<h2>Side by side</h2>",
        _table(["figure", first.run_id, second.run_id, "difference"], rows),
        "<h2>Plots</h2>",
        _plots(images),
        "<h2>Recall per typology</h2>",
        _table(["typology", first.run_id, second.run_id, "difference"], typology_rows),
        "<h2>Median latency (ms)</h2>",
        _table(["step", first.run_id, second.run_id], latency_rows, ["auto", "ms", "ms"]),
    ]
    return _page(f"Backtest {first.run_id} vs {second.run_id}", "".join(sections))
