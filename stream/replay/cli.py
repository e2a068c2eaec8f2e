"""`riskstream replay`: re-stream a topic range or a file through the scorer into an isolated run.

torch is imported inside the command (through the model loader), so `riskstream --help` stays
fast.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stream.settings import Settings, load_settings

if TYPE_CHECKING:
    from stream.context.reveal import LabelSchedule
    from stream.replay.manifest import RunManifest
    from stream.replay.sources import TopicSource

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> timedelta:
    """``"0"``, ``"90s"``, ``"15m"``, ``"6h"``, ``"2.5d"`` (no unit: seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 0, 90s, 15m, 6h, 2d)")
    return timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])


def parse_moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from error
    if moment.tzinfo is None:
        raise typer.BadParameter(f"give the time zone, e.g. {text}Z")
    return moment


def _default_labels(settings: Settings, file: Path | None) -> tuple[str, str] | None:
    """Labels where a replay of this source would find them: ``labels.jsonl`` (or .parquet)
    beside an input file (simulator output), or the labels topic when replaying a topic."""
    if file is not None:
        for name in ("labels.jsonl", "labels.parquet"):
            if (file.parent / name).is_file():
                return "file", str(file.parent / name)
        return None
    return "topic", settings.topics.labels


def replay_command(
    topic: Annotated[
        str | None,
        typer.Option(help="Topic to replay (default: topics.transactions unless --file)."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="A JSONL or Parquet file of TransactionEvents instead.")
    ] = None,
    from_offset: Annotated[
        list[str] | None,
        typer.Option(help="Start offset: OFFSET (every partition) or PARTITION:OFFSET; repeat."),
    ] = None,
    to_offset: Annotated[
        list[str] | None,
        typer.Option(help="End offset, exclusive, same forms (default: the end at start)."),
    ] = None,
    partition: Annotated[
        list[int] | None, typer.Option(help="Only these partitions (repeat; default: all).")
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            help="Start at this time (ISO 8601 with zone): broker timestamps for a topic, "
            "event time for a file."
        ),
    ] = None,
    to_time: Annotated[str | None, typer.Option(help="End before this time (same rule).")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Model version to score with (default: the champion).")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(min=0.001, help="N× real time by event time (default: as fast as possible)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Events per batch (default: scorer.batch_max_size).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Labels file (JSONL/Parquet) revealed as they arrived.")
    ] = None,
    labels_topic: Annotated[str | None, typer.Option(help="Read labels from this topic.")] = None,
    no_labels: Annotated[bool, typer.Option("--no-labels", help="Reveal no labels.")] = False,
    label_delay: Annotated[
        str,
        typer.Option(help="Extra delay before a label counts, after its label_time (e.g. 6h)."),
    ] = "0",
    run_id: Annotated[str | None, typer.Option(help="Name the run (default: generated).")] = None,
    keep_state: Annotated[
        bool, typer.Option("--keep-state", help="Keep the run's Redis namespace afterwards.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Re-stream a topic range or a file through the live scoring code into an isolated run.

    The run gets its own Redis namespace (backtest-RUN_ID, deleted at the end unless
    --keep-state), its own alert topic (<topics.alerts>.backtest.RUN_ID) and its own directory
    (<home>/runs/RUN_ID: run.json, scores.parquet, alerts.jsonl, dead_letters.jsonl). Labels
    count only from label_time + --label-delay on. Same input, model and batch size: same
    alerts. Then: riskstream backtest report RUN_ID.
    """
    from schemas.errors import RiskstreamError
    from stream.replay.run import ReplayOptions, prepare_replay
    from stream.replay.sources import FileSource, ReplaySource

    if file is not None and topic is not None:
        raise typer.BadParameter("give --topic or --file, not both")
    if sum(x is not None for x in (labels, labels_topic)) + no_labels > 1:
        raise typer.BadParameter("give at most one of --labels, --labels-topic, --no-labels")
    if file is not None and (from_offset or to_offset or partition):
        raise typer.BadParameter("offsets and partitions apply to topics; use times for files")
    settings = load_settings()
    start, end = parse_moment(from_time), parse_moment(to_time)
    delay = parse_duration(label_delay)
    if (from_offset and start is not None) or (to_offset and end is not None):
        raise typer.BadParameter("give an offset or a time for each end of the range, not both")

    label_choice: tuple[str, str] | None = None
    explicit = labels is not None or labels_topic is not None
    if labels is not None:
        label_choice = ("file", str(labels))
    elif labels_topic is not None:
        label_choice = ("topic", labels_topic)
    elif not no_labels:
        label_choice = _default_labels(settings, file)

    source: ReplaySource | None = None
    try:
        schedule, label_choice = _label_schedule(settings, label_choice, delay, explicit=explicit)
        if file is not None:  # checked before the model is loaded, which takes a while
            source = FileSource(file, start=start, end=end)
        run = prepare_replay(
            settings,
            ReplayOptions(
                run_id=run_id,
                model_version=model_version,
                batch_size=batch_size or settings.scorer.batch_max_size,
                speed=speed,
                labels=schedule,
                labels_source=f"{label_choice[0]}:{label_choice[1]}" if label_choice else None,
                keep_state=keep_state,
                progress=progress,
            ),
        )
        if source is None:
            try:
                source = _topic_source(
                    settings, topic, run.group_id, from_offset, to_offset, start, end, partition
                )
            except BaseException:
                run.abandon()
                raise
        manifest = run.run(source)
    except RiskstreamError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(130) from None
    finally:
        if source is not None:
            source.close()
    _print_summary(manifest, settings)


def _label_schedule(
    settings: Settings, choice: tuple[str, str] | None, delay: timedelta, *, explicit: bool
) -> tuple[LabelSchedule | None, tuple[str, str] | None]:
    """The labels of ``choice`` (kind, where) revealed ``delay`` late, and the choice kept:
    labels found by default that cannot be read are left out with a warning (None, None);
    ``explicit`` ones that cannot be read fail the replay."""
    from stream.context.reveal import LabelSchedule
    from stream.replay.errors import LabelSourceError
    from stream.replay.labels import read_label_file, read_label_topic

    if choice is None:
        return None, None
    kind, where = choice
    try:
        loaded = (
            read_label_file(Path(where))
            if kind == "file"
            else read_label_topic(settings.kafka, where)
        )
    except LabelSourceError as error:
        if explicit:
            raise
        typer.secho(f"no labels: {error}", err=True, fg=typer.colors.YELLOW)
        return None, None
    schedule = LabelSchedule(loaded, delay)
    typer.echo(f"labels: {len(schedule):,} from {kind} {where}, revealed {delay} late")
    return schedule, choice


def _topic_source(
    settings: Settings,
    topic: str | None,
    group_id: str,
    from_offset: list[str] | None,
    to_offset: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    partitions: list[int] | None,
) -> TopicSource:
    """The topic range to replay: offsets where given, else times (else the whole range)."""
    from stream.replay.sources import OffsetBound, TopicSource

    return TopicSource(
        settings.kafka,
        topic or settings.topics.transactions,
        group_id=group_id,
        start=OffsetBound.parse(from_offset) if from_offset else start,
        end=OffsetBound.parse(to_offset) if to_offset else end,
        partitions=partitions,
    )


def _print_summary(manifest: RunManifest, settings: Settings) -> None:
    c, t = manifest.counts, manifest.timings
    typer.echo(
        f"run {manifest.run_id}: {c.events:,} events, {c.alerts:,} alerts, "
        f"{c.dead_letters:,} dead letters, {manifest.labels.revealed:,} labels revealed "
        f"in {t.seconds:.1f}s ({t.events_per_s:,.0f} events/s)"
    )
    typer.echo(f"alerts on {manifest.output_topic}")
    typer.echo(f"files in {settings.home / 'runs' / manifest.run_id}")
    typer.echo(f"next: riskstream backtest report {manifest.run_id}")
