"""``riskstream model ...``: build training data, train, distil, evaluate and manage versions.

The commands are the streaming side's: they read the settings, build datasets through the
context store in Redis (``stream.datasets``) and announce champions on Kafka; the work itself is
``models``'. torch and transformers are imported inside the commands, so ``riskstream --help``
stays fast.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from schemas.errors import RiskstreamError
from schemas.model_notice import NoticeAction
from stream.settings import load_settings

model_app = typer.Typer(
    help="The narrative risk classifier: datasets, training, evaluation and the registry.",
    no_args_is_help=True,
)

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Simulator output (events.jsonl, truth.jsonl, labels.jsonl), `data import` output "
        "(events.jsonl, labels.jsonl) or a dataset cache written by `model dataset`.",
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


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{option}: not a date YYYY-MM-DD: {text!r}") from None


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--as-of: not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"--as-of: give the time zone, e.g. {text}Z")
    return moment


@model_app.command("dataset")
def dataset_command(
    data: DataOption,
    out: Annotated[
        Path | None, typer.Option(help="Cache directory; default DATA/narratives.")
    ] = None,
    train_fraction: Annotated[
        float | None, typer.Option(help="Share of days that train (default 0.6).")
    ] = None,
    validation_fraction: Annotated[
        float | None, typer.Option(help="Share of days that validate (default 0.2).")
    ] = None,
    train_until: Annotated[
        str | None, typer.Option(help="Split by dates: train on days before this (YYYY-MM-DD).")
    ] = None,
    validate_until: Annotated[
        str | None, typer.Option(help="...validate on days from train-until up to this one.")
    ] = None,
    test_until: Annotated[
        str | None, typer.Option(help="...test on days from validate-until up to this one.")
    ] = None,
    gap: Annotated[
        int, typer.Option(min=0, help="Days left out after each boundary (dates or fractions).")
    ] = 0,
    targets: Annotated[
        str,
        typer.Option(help="auto (truth.jsonl if present, else labels), truth or labels."),
    ] = "auto",
    maturity_days: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Labels: unlabelled events older than this count as legitimate, younger ones "
            "are left out (default: model.target_maturity_days, else estimated from the labels).",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Labels: the moment the maturity counts back from (default: the "
            "newest event or label time)."
        ),
    ] = None,
) -> None:
    """Turn simulator or `data import` output into a day-split narrative dataset (cached as
    Parquet).

    Events go through the real context store (Redis, in a throwaway namespace) with labels
    applied as they become known, then through the narrative builder. Targets are the truth
    file's, or come from the labels and the label maturity (docs/your-data.md)."""
    from models.dataset import SplitRule, TargetOptions
    from stream.datasets import build_split

    if targets not in ("auto", "truth", "labels"):
        raise typer.BadParameter(f"--targets: auto, truth or labels, not {targets!r}")
    dates = (train_until, validate_until, test_until)
    if any(dates) and (train_fraction is not None or validation_fraction is not None):
        raise typer.BadParameter("split by dates or by fractions, not both")
    try:
        rule = SplitRule(
            fractions=(train_fraction or 0.6, validation_fraction or 0.2),
            train_until=_day(train_until, "--train-until"),
            validate_until=_day(validate_until, "--validate-until"),
            test_until=_day(test_until, "--test-until"),
            gap_days=gap,
        )
        split = build_split(
            data,
            load_settings(),
            rule=rule,
            targets=TargetOptions(targets, maturity_days, _moment(as_of)),  # type: ignore[arg-type]
            cache_dir=out,
        )
    except RiskstreamError as exc:  # Redis unreachable is one too
        _fail(str(exc))
        return
    for line in provenance_lines(split.provenance):
        typer.echo(line)
    for name, window in split.data_window().items():
        part = getattr(split, name)
        typer.echo(
            f"{name:<10} {window[0]} .. {window[1]}  events {len(part):>8,}  "
            f"suspicious {int(part.labels.sum()):>6,}"
        )
    typer.echo(f"cached in {out or data / 'narratives'}")


def provenance_lines(provenance: dict[str, Any]) -> list[str]:
    """How a dataset's targets and split were made, in words."""
    if provenance.get("targets") == "labels":
        lines = [
            f"targets from labels as of {provenance['clock']}; label maturity "
            f"{provenance['maturity_days']:g} days ({provenance['maturity_source']})",
            f"  {provenance['labelled_suspicious']:,} labelled suspicious, "
            f"{provenance['labelled_legitimate']:,} labelled legitimate, "
            f"{provenance['presumed_legitimate']:,} unlabelled and mature (legitimate); "
            f"{provenance['left_out_young']:,} younger events left out",
        ]
    elif provenance.get("targets") == "truth":
        lines = [f"targets from the simulator's truth ({provenance['file']})"]
    else:
        lines = []
    if provenance.get("split") == "dates":
        rule = (
            f"split by dates: train < {provenance['train_until']} <= validation < "
            f"{provenance['validate_until']} <= test"
        )
        if provenance.get("test_until"):
            rule += f" < {provenance['test_until']}"
        lines.append(rule)
    if provenance.get("gap_days"):
        lines.append(f"{provenance['gap_days']} days left out after each boundary")
    return lines


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
    from models.inference import load_model
    from models.train_config import preset as make_preset
    from models.workflow import Targets, train_and_register
    from stream.datasets import load_split

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
        for line in provenance_lines(split.provenance):
            typer.echo(line)
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
    except RiskstreamError as exc:  # Redis unreachable is one too
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
    from models.inference import load_model
    from models.workflow import Targets, evaluate_model
    from stream.datasets import load_split

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
    except RiskstreamError as exc:  # Redis unreachable is one too
        _fail(str(exc))
        return
    typer.echo(f"model {model.version}{' int8' if int8 else ''} on {split} days")
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"plots in {plots or settings.home / 'reports' / model.version}")


@model_app.command("score")
def score_command(
    data: Annotated[
        Path, typer.Option(help="A directory with events.jsonl (and labels.jsonl, truth.jsonl).")
    ],
    out: Annotated[Path, typer.Option(help="scores.parquet or scores.csv.")],
    version: Annotated[
        str | None, typer.Option(help="Registry version; default: the champion.")
    ] = None,
) -> None:
    """Score every event of DATA with a registry version and write event_id, event_time,
    customer_id, score, typology, alerted (score >= the version's alert threshold) and the
    event's label (null: none known) to Parquet or CSV - for notebooks."""
    from models.errors import ModelError
    from models.inference import load_model
    from models.scoring import write_scores
    from stream.datasets import score_data

    settings = load_settings()
    try:
        if out.suffix.lower() not in (".parquet", ".csv"):
            raise ModelError(f"{out.name}: write scores to a .parquet or .csv file")
        model = load_model(settings.model, version)
        table = score_data(model, data, settings)
        write_scores(table, out)
    except RiskstreamError as exc:  # Redis unreachable is one too
        _fail(str(exc))
        return
    alerted = sum(table.column("alerted").to_pylist())
    typer.echo(
        f"model {model.version}: {table.num_rows:,} events scored, {alerted:,} at or above "
        f"its alert threshold {model.alert_threshold:.4f}; written to {out}"
    )


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


def _notify_scorers(version: str, action: NoticeAction, reason: str) -> None:
    """Best effort: the registry pointer already changed and is what scorers obey; the notice
    only makes them look now rather than at their next poll."""
    from confluent_kafka import KafkaException

    from stream.kafka.model_notices import announce_champion

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
