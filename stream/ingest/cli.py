"""``riskstream data import``: a bank's history into riskstream files (see docs/your-data.md).

pyarrow and the import machinery load inside the command, so ``riskstream --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(
    help="Bring your own data: import a bank's events and labels (CSV, Parquet, JSONL).",
    no_args_is_help=True,
)


@data_app.command("import")
def import_command(
    events: Annotated[Path, typer.Argument(help="The events table: CSV, Parquet or JSONL.")],
    mapping: Annotated[
        Path, typer.Option(help="TOML mapping from its columns to riskstream fields.")
    ],
    out: Annotated[
        Path, typer.Option(help="Directory for events.jsonl, labels.jsonl, rejects.jsonl.")
    ],
    labels: Annotated[
        Path | None,
        typer.Option(help='A separate labels table (the mapping says from = "file").'),
    ] = None,
    max_reject_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Exit with status 1 when more than this share of input rows is rejected "
            "(the files are written either way).",
        ),
    ] = 0.0,
    sort_run_rows: Annotated[
        int, typer.Option(min=1000, help="Events sorted in memory at once (memory bound).")
    ] = 200_000,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier import.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Import a bank's events and labels as validated riskstream files, in event-time order.

    Every row is converted under the mapping and checked by the wire format's strict decoder;
    a row that fails goes to rejects.jsonl with its row number and a one-line reason, and the
    counts by reason are printed. Then: riskstream model dataset --data OUT."""
    from schemas.errors import RiskstreamError
    from stream.ingest.importer import EVENTS_FILE, LABELS_FILE, REJECTS_FILE, run_import

    try:
        summary = run_import(
            events,
            mapping,
            out,
            labels_path=labels,
            run_rows=sort_run_rows,
            overwrite=force,
            progress=progress,
        )
    except RiskstreamError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(
        f"events {summary.events_written:>9,} written to {out / EVENTS_FILE} "
        f"({summary.first_event_time} .. {summary.last_event_time})"
    )
    legitimate = summary.labels_written - summary.suspicious_labels
    typer.echo(
        f"labels {summary.labels_written:>9,} written to {out / LABELS_FILE} "
        f"({summary.suspicious_labels:,} suspicious, {legitimate:,} legitimate)"
    )
    if summary.label_rows_without_verdict:
        typer.echo(f"       {summary.label_rows_without_verdict:>9,} label rows say no label")
    delays = summary.suspicious_label_delay_days
    if delays is not None:
        typer.echo(
            f"suspicious labels came {delays['p50']:g} days after their event (median), "
            f"{delays['p90']:g} (90th percentile): label maturity "
            f"{summary.suggested_maturity_days:g} days"
        )
    if summary.rejected_rows:
        typer.echo(
            f"rejected {summary.rejected_rows:,} of {summary.input_rows:,} rows "
            f"({summary.reject_rate:.2%}), listed in {out / REJECTS_FILE}:"
        )
        for kind, reasons in summary.rejected.items():
            for reason, count in reasons.items():
                typer.echo(f"  {kind:<6} {reason:<24} {count:>9,}")
    else:
        typer.echo(f"rejected none of {summary.input_rows:,} rows")
    typer.echo(f"took {summary.seconds:.1f}s; next: riskstream model dataset --data {out}")
    if summary.reject_rate > max_reject_rate:
        typer.secho(
            f"error: {summary.reject_rate:.2%} of the rows were rejected, more than "
            f"--max-reject-rate {max_reject_rate:g} allows (the files are written)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1)
