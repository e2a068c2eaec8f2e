"""`riskstream run trainer` (the feedback-loop worker) and `riskstream trainer status`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from stream.settings import load_settings

log = logging.getLogger(__name__)

trainer_app = typer.Typer(help="The feedback loop: labels, fine-tunes, promotions.")


def trainer(
    shadow: Annotated[
        bool | None,
        typer.Option(
            "--shadow/--no-shadow", help="Override trainer.shadow_mode: winners score in shadow."
        ),
    ] = None,
) -> None:
    """Consume labels, fine-tune challengers periodically and promote better ones, until
    SIGTERM/SIGINT.

    On a signal a running fine-tune is stopped (nothing half-written is left) and
    acknowledged labels are committed.

    \b
    Exit codes:
      0  stopped by SIGTERM/SIGINT
      2  cannot start or go on: Redis refused the credentials or did not answer, the
         metrics port is taken, a label cannot be processed or read (e.g. a codec is
         missing); the label in hand is read again after a restart
      3  stopping took longer than trainer.shutdown_timeout_s + 10 s (watchdog)"""
    from stream.context.errors import ContextError
    from stream.trainer.app import EXIT_FATAL, TrainerWorker

    settings = load_settings()
    if shadow is not None:
        settings = settings.model_copy(
            update={"trainer": settings.trainer.model_copy(update={"shadow_mode": shadow})}
        )
    try:
        worker = TrainerWorker(settings)
    except ContextError as exc:
        log.critical("trainer cannot start: %s", exc)
        raise typer.Exit(EXIT_FATAL) from None
    raise typer.Exit(worker.run())


@trainer_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (for scripts).")] = False,
) -> None:
    """Print the trainer's persisted state: stored cases, label outcomes, the last fine-tune,
    the champion and shadow pointers, and the last decisions."""
    from models.registry import Registry
    from stream.redis_client import connect
    from stream.trainer.store import MAX_UNJOINED, CaseStore

    settings = load_settings()
    client = connect(settings.redis)
    store = CaseStore(
        client,
        settings.context.namespace,
        max_cases=settings.trainer.max_cases,
        ttl_s=settings.trainer.cases_ttl_days * 86_400,
        max_unjoined=MAX_UNJOINED,
    )
    state = store.state()
    registry = Registry(settings.model.registry_dir)
    decisions = [
        {k: entry.get(k) for k in ("at", "action", "version", "previous", "reason")}
        for entry in registry.history()[-5:]
    ]
    report = {
        "cases": {"suspicious": state.suspicious, "legitimate": state.legitimate},
        "new_cases": state.new_cases,
        "label_outcomes": state.outcomes,
        "unjoined_labels": len(store.unjoined()),
        "last_finetune_at_ms": state.finetune_at_ms or None,
        "stream_clock_ms": state.clock_ms or None,
        "champion": registry.champion(),
        "shadow": registry.shadow(),
        "last_decisions": decisions,
    }
    client.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for line in status_lines(report):
        typer.echo(line)


def _moment(ms: int | None) -> str:
    if not ms:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def status_lines(report: dict[str, Any]) -> list[str]:
    """``trainer status`` for a person: the same facts as ``--json``."""
    cases = report["cases"]
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(report["label_outcomes"].items()))
    lines = [
        f"cases         {cases['suspicious']:,} suspicious, {cases['legitimate']:,} legitimate "
        f"({report['new_cases']:,} new since the last fine-tune)",
        f"labels        {outcomes or 'none yet'}; {report['unjoined_labels']:,} waiting to join",
        f"last fine-tune {_moment(report['last_finetune_at_ms'])} (wall clock); stream clock "
        f"{_moment(report['stream_clock_ms'])} (newest label time)",
        f"champion      {report['champion'] or 'none'}"
        + (f"; shadow {report['shadow']}" if report["shadow"] else ""),
        "last decisions:" if report["last_decisions"] else "last decisions: none",
    ]
    for d in report["last_decisions"]:
        lines.append(f"  {d['at']}  {d['action']:<9} {d['version']}  {d.get('reason') or ''}")
    return lines
