"""`riskstream backtest report|list`: figures and an HTML report for replay runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stream.settings import load_settings

if TYPE_CHECKING:
    from stream.backtest.report import BacktestReport

backtest_app = typer.Typer(
    help="Reports on replay runs: precision, recall, PR-AUC, time to detect, latency, plots.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@backtest_app.command("report")
def report_command(
    run_id: Annotated[str, typer.Argument(help="The run (see `riskstream backtest list`).")],
    compare: Annotated[
        str | None, typer.Option(help="A second run to compare side by side (e.g. other model).")
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Simulator truth file (truth.jsonl / truth.parquet).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Labels file: unlabelled events count as legitimate.")
    ] = None,
    labels_topic: Annotated[str | None, typer.Option(help="Labels topic, same rule.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <home>/runs/RUN_ID/report).")
    ] = None,
    broker: Annotated[
        bool,
        typer.Option(help="Read the alerts' broker timestamps from the run's topic (latency)."),
    ] = True,
    maturity_days: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Labels only: leave out events younger than this at the newest event or label "
            "time (their outcome is not known yet), as `model dataset` does.",
        ),
    ] = None,
) -> None:
    """Join a run's scores and alerts with the truth; print the figures and write report.html
    (with plots) and report.json. Without --truth/--labels/--labels-topic: the truth file next
    to a replayed file, else the labels the run revealed - judged with hindsight (every label
    known now counts, unlike during the replay)."""
    from schemas.errors import RiskstreamError
    from stream.backtest.data import TruthChoice
    from stream.backtest.reporting import report_for_run, write_comparison, write_report

    given: list[TruthChoice] = []
    if truth is not None:
        given.append(TruthChoice("truth", str(truth)))
    if labels is not None:
        given.append(TruthChoice("labels-file", str(labels)))
    if labels_topic is not None:
        given.append(TruthChoice("labels-topic", labels_topic))
    if len(given) > 1:
        raise typer.BadParameter("give at most one of --truth, --labels, --labels-topic")
    settings = load_settings()
    try:
        first = report_for_run(
            settings,
            run_id,
            given[0] if given else None,
            use_broker=broker,
            maturity_days=maturity_days,
        )
        folder = out or first.data.directory / "report"
        path = write_report(first, folder)
        for line in summary_lines(first.report):
            typer.echo(line)
        typer.echo(f"report: {path}")
        if compare is not None:
            second = report_for_run(
                settings,
                compare,
                given[0] if given else None,
                use_broker=broker,
                maturity_days=maturity_days,
            )
            write_report(second, out / compare if out else second.data.directory / "report")
            typer.echo("")
            for line in summary_lines(second.report):
                typer.echo(line)
            typer.echo(f"comparison: {write_comparison(first, second, folder)}")
    except RiskstreamError as error:
        raise _fail(str(error)) from error


def summary_lines(report: BacktestReport) -> list[str]:
    def f(value: float | None, digits: int = 4) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    ttd = report.time_to_detect
    lines = [
        f"run {report.run_id}  model {report.model_version}  truth: {report.truth_source}",
        f"events {report.events:,}  suspicious {report.suspicious:,}  alerts {report.alerts:,} "
        f"({f(report.alerts_per_day, 1)}/day over {report.days} days)",
        f"precision {f(report.precision)}  recall {f(report.recall)}  "
        f"PR-AUC {f(report.average_precision)}",
        f"scenarios detected {ttd.detected}/{ttd.scenarios}, median "
        f"{f(ttd.median_events, 1)} events / {f(ttd.median_hours, 2)} h to the first alert",
    ]
    for row in report.per_typology:
        lines.append(f"  {row.typology:<24} recall {row.recall:.3f}  ({row.alerted}/{row.events})")
    for step, p in report.latency_ms.items():
        lines.append(f"  latency {step:<30} p50 {f(p.p50, 1)} ms  p99 {f(p.p99, 1)} ms")
    return lines


@backtest_app.command("list")
def list_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array of the runs' manifests (run.json).")
    ] = False,
) -> None:
    """Runs under <home>/runs, newest first: status, model, events, alerts."""
    from stream.replay.errors import ReplayError
    from stream.replay.manifest import RunManifest, runs_dir

    folder = runs_dir(load_settings().home)
    manifests = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            manifests.append(RunManifest.read(path))
        except (ReplayError, ValueError):
            continue
    manifests.sort(key=lambda m: m.timings.started_at, reverse=True)
    if as_json:
        typer.echo(json.dumps([m.model_dump(mode="json") for m in manifests], indent=2))
        return
    for m in manifests:
        typer.echo(
            f"{m.run_id:<56} {m.status:<11} {m.model_version:<36} "
            f"events {m.counts.events:>9,}  alerts {m.counts.alerts:>7,}"
        )
    if not manifests:
        typer.echo(f"no runs in {folder}")
