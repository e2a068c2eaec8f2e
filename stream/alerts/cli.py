"""`riskstream alerts tail`: read alerts as they arrive, pretty or as JSON lines."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer

from stream.settings import load_settings

alerts_app = typer.Typer(help="Read risk alerts.", no_args_is_help=True)


def _parse_start(value: str) -> str | datetime:
    if value in ("now", "beginning"):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter("use now, beginning, or an ISO 8601 time with offset") from error
    if moment.tzinfo is None:
        raise typer.BadParameter("give the time zone, e.g. 2026-03-01T08:00:00Z")
    return moment


@alerts_app.command("tail")
def tail(
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="now, beginning, or an ISO 8601 time (e.g. 2026-03-01T08:00Z) on the broker's "
            "clock: the time each alert was written to the topic (its Kafka timestamp), not the "
            "event time of the payment it is about - replayed or simulated traffic has event "
            "times far from the time it was scored.",
        ),
    ] = "now",
    as_json: Annotated[
        bool, typer.Option("--json", help="One alert JSON per line (for piping).")
    ] = False,
    min_score: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Only alerts scoring at least this.")
    ] = 0.0,
    typology: Annotated[
        list[str] | None, typer.Option(help="Only these typologies (repeat the option).")
    ] = None,
    customer: Annotated[list[str] | None, typer.Option(help="Only these customers.")] = None,
    topic: Annotated[
        str | None,
        typer.Option(help="Alert topic (default: topics.alerts; e.g. the shadow topic)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many alerts.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds without alerts.")
    ] = None,
    all_copies: Annotated[
        bool, typer.Option(help="Show redelivered copies too (same alert id) instead of once.")
    ] = False,
) -> None:
    """Print alerts from the alert topic as they arrive (Ctrl-C stops)."""
    from stream.alerts.tail import read_alerts
    from stream.alerts.view import AlertFilter, SeenAlerts, render

    settings = load_settings()
    try:
        chosen = AlertFilter.build(min_score, typology or [], customer or [])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    seen = SeenAlerts()
    shown = 0

    def invalid(raw: bytes | None, reason: str) -> None:
        typer.secho(f"skipped an invalid alert message: {reason}", err=True, fg=typer.colors.YELLOW)

    try:
        for raw, alert in read_alerts(
            settings.kafka,
            topic or settings.topics.alerts,
            _parse_start(start),
            idle_timeout_s=idle_timeout,
            on_invalid=invalid,
        ):
            if not chosen.accepts(alert) or not (all_copies or seen.first_time(alert.alert_id)):
                continue
            if as_json:
                sys.stdout.buffer.write(raw + b"\n")
                sys.stdout.flush()
            else:
                typer.echo(render(alert) + "\n")
            shown += 1
            if limit is not None and shown >= limit:
                break
    except KeyboardInterrupt:
        pass
    except LookupError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from error
