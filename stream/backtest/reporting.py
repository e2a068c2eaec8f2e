"""From a run id to report files: pick the truth, read the run, compute, plot, write.

Written per run into ``<run dir>/report/`` (or ``--out``): ``report.html`` (self-contained)
and ``report.json`` (every figure, for tools and for diffing two reports). A comparison writes
``compare-<other run>.html`` / ``.json`` beside them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
from confluent_kafka import KafkaException

from schemas import LabelEvent
from stream.backtest.data import (
    RunData,
    TruthChoice,
    broker_timestamps,
    default_truth,
    load_run,
    truth_from_file,
    truth_from_labels,
    with_landing_times,
)
from stream.backtest.errors import BacktestError
from stream.backtest.html import render_comparison, render_report
from stream.backtest.plots import alerts_over_time, evaluation_plots, pr_curves, typology_recall
from stream.backtest.report import (
    BacktestReport,
    TruthRow,
    build_report,
    mature_events,
    suspicious_mask,
    true_typologies,
)
from stream.replay.sources import to_ms
from stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    data: RunData
    truth: dict[str, TruthRow]
    report: BacktestReport


def read_labels(settings: Settings, choice: TruthChoice) -> list[LabelEvent]:
    from stream.replay.labels import read_label_file, read_label_topic

    if choice.kind == "labels-file":
        return read_label_file(Path(choice.where))
    return read_label_topic(settings.kafka, choice.where)


def report_for_run(
    settings: Settings,
    run_id: str,
    choice: TruthChoice | None,
    *,
    use_broker: bool = True,
    maturity_days: float | None = None,
) -> RunReport:
    """The report of a run. ``maturity_days`` (labels only): leave out events younger than
    the label maturity, as training and evaluation do (their outcome is not known yet)."""
    data = load_run(settings.home, run_id)
    if choice is None:
        choice = default_truth(data.manifest)
        if choice is None:
            raise BacktestError(
                f"run {run_id} has no truth beside its input and revealed no labels: "
                "give --truth, --labels or --labels-topic"
            )
    table, truth_source = data.table, choice.describe()
    if choice.kind == "truth":
        if maturity_days is not None:
            raise BacktestError("--maturity-days applies to labels: a truth file is complete")
        truth = truth_from_file(Path(choice.where))
    else:
        labels = read_labels(settings, choice)
        truth = truth_from_labels(labels)
        if maturity_days is not None:
            newest = max((lb.label_time for lb in labels), default=None)
            table, young = mature_events(
                table, None if newest is None else to_ms(newest), maturity_days
            )
            truth_source += f"; {young:,} events younger than {maturity_days:g} days left out"
    alerts = data.alerts
    if use_broker and alerts:
        try:
            landed = broker_timestamps(settings.kafka, data.manifest.output_topic)
            alerts = with_landing_times(alerts, data.alert_ids, landed)
        except (BacktestError, KafkaException) as exc:
            log.warning("no broker timestamps for %s: %s", data.manifest.output_topic, exc)
    manifest = data.manifest
    report = build_report(
        run_id=manifest.run_id,
        model_version=manifest.model_version,
        alert_threshold=manifest.alert_threshold,
        truth_source=truth_source,
        table=table,
        truth=truth,
        alerts=alerts,
        scored_latency_ms=data.scored_latency_ms,
    )
    return RunReport(replace(data, table=table), truth, report)


def _json(payload: object) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n"


def write_report(run: RunReport, out: Path) -> Path:
    """report.html and report.json in ``out``; returns the HTML's path."""
    report, table = run.report, run.data.table
    images = evaluation_plots(
        table.scores, true_typologies(table, run.truth), report.alert_threshold, report.run_id
    )
    images["alerts_over_time"] = alerts_over_time([report])
    if report.per_typology:
        images["typology_recall"] = typology_recall([report])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(_json(report.model_dump(mode="json")))
    path = out / "report.html"
    path.write_text(render_report(report, images), encoding="utf-8")
    return path


def event_overlap(first: RunReport, second: RunReport) -> dict[str, int]:
    a, b = set(first.data.table.event_ids), set(second.data.table.event_ids)
    return {"both": len(a & b), "only_first": len(a - b), "only_second": len(b - a)}


def write_comparison(first: RunReport, second: RunReport, out: Path) -> Path:
    """compare-<second run>.html / .json in ``out``; returns the HTML's path."""
    curves = [
        (r.report.run_id, suspicious_mask(r.data.table, r.truth), r.data.table.scores)
        for r in (first, second)
    ]
    reports = [first.report, second.report]
    images = {
        "pr_curve": pr_curves(curves),
        "alerts_over_time": alerts_over_time(reports),
        "typology_recall": typology_recall(reports),
    }
    overlap = event_overlap(first, second)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compare-{second.report.run_id}"
    (out / f"{stem}.json").write_bytes(
        _json(
            {
                "overlap": overlap,
                "runs": [r.model_dump(mode="json") for r in reports],
            }
        )
    )
    path = out / f"{stem}.html"
    path.write_text(
        render_comparison(first.report, second.report, images, overlap), encoding="utf-8"
    )
    return path
