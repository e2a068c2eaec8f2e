"""``riskstream model ...``: build training data, train, distil, evaluate and manage versions.

torch and transformers are imported inside the commands, so ``riskstream --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from stream.settings import load_settings

model_app = typer.Typer(
    help="The narrative risk classifier: datasets, training, evaluation and the registry.",
    no_args_is_help=True,
)

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Simulator output (events.jsonl, truth.jsonl, labels.jsonl) or a dataset cache "
        "written by `model dataset`.",
    ),
]
AlertRate = Annotated[
    float, typer.Option(help="Alert budget: share of events alerted (thresholds, recall@budget).")
]
Precision = Annotated[float, typer.Option(help="Target precision (thresholds, recall@precision).")]


def _registry() -> Any:
    from models.registry import Registry

    return Registry(load_settings().model.registry_dir)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@model_app.command("dataset")
def dataset_command(
    data: DataOption,
    out: Annotated[
        Path | None, typer.Option(help="Cache directory; default DATA/narratives.")
    ] = None,
    train_fraction: Annotated[float, typer.Option(help="Share of days that train.")] = 0.6,
    validation_fraction: Annotated[float, typer.Option(help="Share of days that validate.")] = 0.2,
) -> None:
    """Turn simulator output into a day-split narrative dataset (cached as Parquet).

    Events go through the real context store (Redis, in a throwaway namespace) with labels
    applied as they become known, then through the narrative builder."""
    from models.dataset import build_split
    from models.errors import ModelError

    try:
        split = build_split(
            data, load_settings(), fractions=(train_fraction, validation_fraction), cache_dir=out
        )
    except ModelError as exc:
        _fail(str(exc))
        return
    for name, window in split.data_window().items():
        part = getattr(split, name)
        typer.echo(
            f"{name:<10} {window[0]} .. {window[1]}  events {len(part):>8,}  "
            f"suspicious {int(part.labels.sum()):>6,}"
        )


@model_app.command("train")
def train_command(
    data: DataOption,
    preset: Annotated[
        str, typer.Option(help="Hyper-parameter preset: demo, tiny, student, minilm.")
    ] = "demo",
    backbone: Annotated[str | None, typer.Option(help="minilm or student (overrides)")] = None,
    hybrid: Annotated[
        bool | None, typer.Option("--hybrid/--text-only", help="Numeric features beside text.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Training steps at most.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    legit_sample_rate: Annotated[
        float | None, typer.Option(help="Share of legitimate training events kept.")
    ] = None,
    threshold_target: Annotated[
        str, typer.Option(help="alert_rate or precision: what sets the alert threshold.")
    ] = "alert_rate",
    alert_rate: AlertRate = 0.01,
    precision: Precision = 0.5,
    name: Annotated[str | None, typer.Option(help="Suffix of the version name.")] = None,
    parent: Annotated[str | None, typer.Option(help="Version this one is tuned from.")] = None,
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote", help="Make it the champion (default: only if none yet)."
        ),
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run log + checkpoint directory.")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Distil from this registry version (a fine-tuned MiniLM).")
    ] = None,
) -> None:
    """Train a classifier and register it as a new version.

    Trains on the earliest days, early-stops and calibrates thresholds on the next ones,
    reports metrics on the last ones."""
    from models.dataset import load_split
    from models.errors import ModelError
    from models.inference import load_model
    from models.train import preset as make_preset
    from models.workflow import Targets, train_and_register

    settings = load_settings()
    overrides: dict[str, Any] = {"seed": seed}
    for key, value in (
        ("backbone", backbone),
        ("hybrid", hybrid),
        ("max_steps", max_steps),
        ("legit_sample_rate", legit_sample_rate),
    ):
        if value is not None:
            overrides[key] = value
    registry = _registry()
    try:
        config = make_preset(preset, **overrides)
        split = load_split(data, settings)
        teacher_model = load_model(settings.model, teacher) if teacher else None
        run = train_and_register(
            split,
            config,
            registry,
            targets=Targets(threshold_target, alert_rate, precision),  # type: ignore[arg-type]
            parent_version=parent or teacher,
            name=name,
            run_dir=run_dir or settings.home / "runs" / f"train-{config.backbone}",
            teacher=teacher_model,
        )
    except ModelError as exc:
        _fail(str(exc))
        return
    assert run.version is not None
    if promote or (promote is None and registry.champion() is None):
        registry.promote(run.version, reason="trained by `riskstream model train`")
    typer.echo(
        f"registered {run.version}" + (" (champion)" if registry.champion() == run.version else "")
    )
    typer.echo(f"training: {json.dumps(run.result.summary())}")
    typer.echo(f"alert threshold {run.thresholds.alert_threshold:.4f}")
    for line in run.report.lines():
        typer.echo(line)


@model_app.command("eval")
def eval_command(
    data: DataOption,
    version: Annotated[str | None, typer.Argument(help="Version; default: the champion.")] = None,
    split: Annotated[
        Literal["train", "validation", "test"], typer.Option(help="Which days to evaluate on.")
    ] = "test",
    plots: Annotated[Path | None, typer.Option(help="Write PR curve + histograms here.")] = None,
    alert_rate: AlertRate = 0.01,
    precision: Precision = 0.5,
    int8: Annotated[bool, typer.Option(help="Evaluate the dynamic int8 quantised model.")] = False,
) -> None:
    """Evaluate a version: PR-AUC, ROC-AUC, recalls, per-typology recall, PNG plots.

    Recall is reported at the alert budget and at the target precision."""
    from models.dataset import load_split
    from models.errors import ModelError
    from models.inference import load_model
    from models.workflow import Targets, evaluate_model

    settings = load_settings()
    try:
        model = load_model(settings.model, version, quantize=int8)
        part = getattr(load_split(data, settings), split)
        report = evaluate_model(
            model,
            part,
            targets=Targets("alert_rate", alert_rate, precision),
            plots_dir=plots or settings.home / "reports" / model.version,
        )
    except ModelError as exc:
        _fail(str(exc))
        return
    typer.echo(f"model {model.version}{' int8' if int8 else ''} on {split} days")
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"plots in {plots or settings.home / 'reports' / model.version}")


@model_app.command("list")
def list_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array, one object per version.")
    ] = False,
) -> None:
    """List registered versions, newest last; * marks the champion."""
    rows = list(_registry().summaries())
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    if not rows:
        typer.echo("no models registered")
        return
    for row in rows:
        ap = f"{row.average_precision:.4f}" if row.average_precision is not None else "   -  "
        kind = f"{row.backbone}{'+features' if row.hybrid else ''}"
        typer.echo(
            f"{'*' if row.champion else ' '} {row.version:<44} {kind:<18} AP {ap}  "
            f"narrative {row.narrative_version}  parent {row.parent_version or '-'}"
        )


@model_app.command("show")
def show_command(
    version: Annotated[str | None, typer.Argument(help="Version; default: the champion.")] = None,
) -> None:
    """Print a version's config, data window, metrics and thresholds as JSON."""
    from models.errors import ModelError

    registry = _registry()
    try:
        typer.echo(json.dumps(registry.describe(registry.resolve(version)), indent=2))
    except ModelError as exc:
        _fail(str(exc))


NotifyOption = Annotated[
    bool,
    typer.Option(
        "--notify/--no-notify",
        help="Announce the change on the models topic so running scorers reload at once "
        "(they also re-read the champion pointer every few seconds).",
    ),
]
_NOTIFY_TIMEOUT_S = 5.0


def _notify_scorers(version: str, action: str, reason: str) -> None:
    """Best effort: the registry pointer already changed and is what scorers obey; the notice
    only makes them look now rather than at their next poll."""
    from confluent_kafka import KafkaException

    from stream.scorer.model_source import announce_champion

    settings = load_settings()
    try:
        announce_champion(settings, version, action, reason, timeout_s=_NOTIFY_TIMEOUT_S)
    except KafkaException as exc:
        typer.secho(
            f"warning: scorers not notified ({exc}); they pick the change up from the "
            "registry within seconds",
            fg=typer.colors.YELLOW,
            err=True,
        )
        return
    typer.echo(f"notified scorers on {settings.topics.models}")


@model_app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="The version to serve.")],
    reason: Annotated[str, typer.Option(help="Recorded in the promotion history.")] = "",
    notify: NotifyOption = True,
) -> None:
    """Make VERSION the champion (after loading it: a broken version is never promoted)."""
    from models.errors import ModelError

    registry = _registry()
    reason = reason or "promoted by `riskstream model promote`"
    try:
        registry.load(version)
        registry.promote(version, reason=reason)
    except ModelError as exc:
        _fail(str(exc))
        return
    typer.echo(f"champion is now {version}")
    if notify:
        _notify_scorers(version, "promote", reason)


@model_app.command("rollback")
def rollback_command(
    reason: Annotated[str, typer.Option(help="Recorded in the promotion history.")] = "",
    notify: NotifyOption = True,
) -> None:
    """Make the previous champion the champion again."""
    from models.errors import ModelError

    reason = reason or "rolled back by `riskstream model`"
    try:
        version = _registry().rollback(reason=reason)
    except ModelError as exc:
        _fail(str(exc))
        return
    typer.echo(f"champion is now {version}")
    if notify:
        _notify_scorers(version, "rollback", reason)
