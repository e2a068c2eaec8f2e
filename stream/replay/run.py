"""The replay loop: a bounded source through the live scorer's ``BatchProcessor``, into a run
isolated from production.

    source ──► batches of N, cut at label reveal times ──► labels revealed ──► ContextStore (own ns)
                             └─► BatchProcessor.process (decode → context → narrate → score →
                                 explain → persist; the very code `riskstream run scorer` runs)
                                 ├─► alerts ──► <alerts topic>.backtest.<run-id> + alerts.jsonl
                                 ├─► every score ──► scores.parquet
                                 └─► dead letters ──► dead_letters.jsonl

The loop is the batch driver's (``stream.pipeline.driver``, with the replay's source, sink and
steps in ``driving``): the same retries and the same model-lane overlap as every batch loop.

Isolation: the run's Redis namespace is ``backtest-<run-id>`` (context and scored records; a
run id already used is refused, and the namespace is deleted at the end unless kept), its alerts
go to a topic of its own created for it, and its source is read without committing offsets.

Determinism: a batch is a function of the input order and the labels alone (N events; with
pacing, also cut where the event-time gap exceeds ``scorer.batch_max_wait_ms`` × speed; and
cut at label reveal times, ``stream.context.reveal``), the source's order is a function of the
data (see ``sources``), and context updates are exact whatever the batching. So the same
input, model, batch size and speed give the same alerts (ids, scores, typologies, reasons,
narratives) and the same scores every time. Only the wall-clock fields differ:
``received_at``, ``scored_at`` and ``emitted_at`` stay real times because the report's latency
figures are made of them.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka.admin import AdminClient
from tqdm.auto import tqdm

from models.inference import LoadedModel
from models.registry import Registry
from stream.context.errors import ContextUnavailable
from stream.context.keys import marker_key
from stream.context.reveal import LabelSchedule, RevealClock
from stream.context.store import ContextStore
from stream.kafka.clients import TrackedProducer, producer_config
from stream.kafka.errors import FlushTimeout
from stream.kafka.topics import DEFAULT_PARTITIONS, ensure_topics
from stream.pipeline.driver import BatchDriver, DriverLimits
from stream.pipeline.retry import RetryPolicy
from stream.redis_client import AnyRedis, connect
from stream.replay.driving import ReleasedBatches, ReplaySteps, RunSink
from stream.replay.errors import ReplayError, RunExists
from stream.replay.manifest import LabelsUsed, RunManifest, RunTimings, check_run_id
from stream.replay.manifest import run_dir as run_dir_for
from stream.replay.outputs import DEAD_LETTERS_TO_FILE, RunFiles, ScoreCapture
from stream.replay.sources import ReplaySource, SourceRecord, from_ms
from stream.scorer.app import loader_for, narrator_for
from stream.scorer.core import EventWindow
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.processor import (
    BatchProcessor,
    OutputTopics,
    utc_now,
)
from stream.settings import Settings

log = logging.getLogger(__name__)

# A replay is a bounded job: after this many attempts at a batch it fails rather than wait
# for ever; and alerts the broker has not acknowledged after DELIVERY_WAIT_S fail the run at
# once (the broker is away: a run can be started again, a longer wait only holds it up).
MAX_ATTEMPTS = 8
DELIVERY_WAIT_S = 120.0
POLICY = RetryPolicy(
    retriable=tuple(e for e in RetryPolicy().retriable if e is not FlushTimeout),
    max_attempts=MAX_ATTEMPTS,
)


@dataclass(frozen=True)
class ReplayOptions:
    run_id: str | None = None
    """None: ``<UTC time>-<model version, short>-<4 hex>``."""
    model_version: str | None = None
    """None: the registry's champion."""
    batch_size: int = 256
    speed: float | None = None
    """N× real time by event time; None: as fast as possible."""
    labels: LabelSchedule | None = None
    labels_source: str | None = None
    keep_state: bool = False
    progress: bool = True


# -- pure helpers -----------------------------------------------------------------------------


def model_short(version: str) -> str:
    """A model version cut to fit a run id: registry versions start with their creation time
    (``20260301T120000Z-student-tiny``), which alone tells versions of one registry apart."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", version).strip("-")
    return cleaned[:24].strip("-") or "model"


def new_run_id(model_version: str, now: datetime, token: str) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{model_short(model_version)}-{token}"


def namespace_for(run_id: str) -> str:
    return f"backtest-{run_id}"


def output_topic_for(alerts_topic: str, run_id: str) -> str:
    return f"{alerts_topic}.backtest.{run_id}"


def batches(
    records: Iterable[SourceRecord], size: int, max_span_ms: float | None = None
) -> Iterator[list[SourceRecord]]:
    """Consecutive batches of ``size`` records; with ``max_span_ms``, a batch also ends before
    a record more than that much event time after the batch's first (what the live scorer's
    fill timeout does to a paced stream). Depends on the records alone, never on timing."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batch: list[SourceRecord] = []
    first_ms: int | None = None
    for record in records:
        when = record.event_time_ms
        too_far = (
            max_span_ms is not None
            and first_ms is not None
            and when is not None
            and when - first_ms > max_span_ms
        )
        if batch and too_far:
            yield batch
            batch, first_ms = [], None
        batch.append(record)
        if first_ms is None:
            first_ms = when
        if len(batch) >= size:
            yield batch
            batch, first_ms = [], None
    if batch:
        yield batch


class Pacer:
    """Releases batches at ``speed``× real time by event time (None: never waits)."""

    def __init__(
        self,
        speed: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = speed
        self._clock, self._sleep = clock, sleep
        self._origin: tuple[float, int] | None = None

    def wait_for(self, event_ms: int | None) -> float:
        """Sleep until the wall-clock moment ``event_ms`` maps to; returns the seconds slept."""
        if self._speed is None or event_ms is None:
            return 0.0
        if self._origin is None:
            self._origin = (self._clock(), event_ms)
            return 0.0
        wall0, event0 = self._origin
        delay = wall0 + (event_ms - event0) / 1000 / self._speed - self._clock()
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0


def alert_topic_partitions(settings: Settings) -> int:
    """The live alert topic's partition count (the run's topic mirrors it), or the default."""
    admin = AdminClient(settings.kafka.client_config())
    metadata = admin.list_topics(settings.topics.alerts, timeout=30)
    info = metadata.topics.get(settings.topics.alerts)
    if info is None or info.error is not None or not info.partitions:
        return DEFAULT_PARTITIONS
    return len(info.partitions)


# -- the run ----------------------------------------------------------------------------------


class Replay:
    """One run; build with :func:`prepare_replay`, then :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        options: ReplayOptions,
        model: LoadedModel,
        run_id: str,
        client: AnyRedis,
    ) -> None:
        self.settings, self.options, self.model = settings, options, model
        self.run_id = run_id
        self.directory = run_dir_for(settings.home, run_id)
        self.namespace = namespace_for(run_id)
        self.output_topic = output_topic_for(settings.topics.alerts, run_id)
        self._client = client
        labels = options.labels
        self.manifest = RunManifest(
            run_id=run_id,
            status="running",
            model_version=model.version,
            alert_threshold=model.alert_threshold,
            narrative_version=model.narrative_version,
            source={},
            labels=LabelsUsed(
                source=options.labels_source if labels is not None else None,
                reveal_delay_s=labels.reveal_delay.total_seconds() if labels else 0.0,
                total=len(labels) if labels else 0,
            ),
            namespace=self.namespace,
            state_kept=options.keep_state,
            output_topic=self.output_topic,
            output_partitions=alert_topic_partitions(settings),
            batch_size=options.batch_size,
            speed=options.speed,
            timings=RunTimings(started_at=utc_now()),
        )

    def _claim(self) -> None:
        """Refuse a run id already used anywhere; then create the topic and the directory."""
        if self.directory.exists():
            raise RunExists(f"run {self.run_id} exists: {self.directory}")
        if self._client.exists(marker_key(self.namespace)):
            raise RunExists(f"Redis namespace {self.namespace} is in use (a kept run?)")
        topic = self.output_topic
        created = ensure_topics(
            self.settings.kafka,
            {topic: self.manifest.output_partitions},
            # The broker stamps each alert when it lands, so the report can tell how long an
            # alert took from the moment its event was read to the moment it was on the topic.
            configs={topic: {"message.timestamp.type": "LogAppendTime"}},
        )
        if topic not in created:
            raise RunExists(f"topic {topic} already exists: run id {self.run_id} was used")
        self.directory.mkdir(parents=True)
        self.manifest.write(self.directory)

    def abandon(self) -> None:
        """Release what :func:`prepare_replay` opened, for a run that will not start (its
        source could not be opened); :meth:`run` releases it itself."""
        self._client.close()

    @property
    def group_id(self) -> str:
        """The consumer group a topic source should use: the run's own."""
        return f"riskstream-replay-{self.run_id}"

    def run(self, source: ReplaySource) -> RunManifest:
        """Replay ``source`` (the caller closes it)."""
        self.manifest.source = source.describe()
        try:
            self._claim()
        except BaseException:
            self._client.close()
            raise
        started = time.monotonic()
        settings = self.settings
        store: ContextStore | None = None
        files: RunFiles | None = None
        metrics = ScorerMetrics()
        try:
            store = ContextStore(
                self._client,
                settings.context.model_copy(update={"namespace": self.namespace}),
                create_namespace=True,  # its own, new namespace (_claim refused a used one)
            )
            records = ScoreCapture(
                self._client, self.namespace, settings.scorer.scored_ttl_days * 86_400
            )
            processor = BatchProcessor(
                store=store,
                records=records,
                narrator=narrator_for,
                metrics=metrics,
                topics=OutputTopics(alerts=self.output_topic, dlq=DEAD_LETTERS_TO_FILE),
                alert_mode="backtest",
                window=EventWindow.of(
                    settings.scorer.event_time_max_ahead_s, settings.scorer.event_time_max_behind_s
                ),
            )
            files = RunFiles(self.directory)
            producer = TrackedProducer(producer_config(settings.kafka))
            self._loop(source, store, records, processor, producer, files)
            self.manifest.status = "completed"
        except KeyboardInterrupt:
            self.manifest.status = "interrupted"
            raise
        except Exception as exc:
            self.manifest.status = "failed"
            self.manifest.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._finish(store, files, metrics, time.monotonic() - started)
        return self.manifest

    def _loop(
        self,
        source: ReplaySource,
        store: ContextStore,
        records: ScoreCapture,
        processor: BatchProcessor,
        producer: TrackedProducer,
        files: RunFiles,
    ) -> None:
        """The run on the batch driver (``stream.replay.driving``): batches cut by the data,
        the model on the lane while the next batch is prepared - as in the live scorer - and
        each batch's alerts acknowledged by the broker before the next one is delivered, so a
        failed run never leaves a gap in the middle of its topic."""
        options, scorer = self.options, self.settings.scorer
        span_ms = scorer.batch_max_wait_ms * options.speed if options.speed else None
        release = ReleasedBatches(
            batches(source.records(), options.batch_size, span_ms),
            clock=RevealClock(options.labels),
            window=EventWindow.of(scorer.event_time_max_ahead_s, scorer.event_time_max_behind_s),
            wait_for=Pacer(options.speed).wait_for,
            on_event_times=self._widen_event_times,
        )
        with tqdm(
            total=source.total,
            unit="event",
            unit_scale=True,
            desc=f"replay {self.run_id}",
            disable=not options.progress,
        ) as bar:
            steps = ReplaySteps(
                processor=processor,
                model=self.model,
                store=store,
                records=records,
                files=files,
                release=release,
                manifest=self.manifest,
                bar=bar,
            )
            BatchDriver(
                release,
                RunSink(producer, files),
                steps,
                limits=DriverLimits(max_records=options.batch_size, wait_s=0.0,
                                    flush_wait_s=DELIVERY_WAIT_S),
                policy=POLICY,
                overlap=True,
            ).run()  # fmt: skip

    def _widen_event_times(self, first_ms: int, last_ms: int) -> None:
        first, last = from_ms(first_ms), from_ms(last_ms)
        m = self.manifest
        m.event_time_first = first if m.event_time_first is None else min(m.event_time_first, first)
        m.event_time_last = last if m.event_time_last is None else max(m.event_time_last, last)

    def _finish(
        self,
        store: ContextStore | None,
        files: RunFiles | None,
        metrics: ScorerMetrics,
        seconds: float,
    ) -> None:
        m = self.manifest
        try:
            if files is not None:
                files.close()
            if store is not None:
                store.close()
            if store is not None and not self.options.keep_state:
                try:
                    dropped = store.drop_namespace()
                    log.info("deleted %d keys of namespace %s", dropped, self.namespace)
                except ContextUnavailable as exc:
                    m.state_kept = True
                    log.error("namespace %s NOT deleted (%s); its keys expire with their TTL",
                              self.namespace, exc)  # fmt: skip
        finally:
            self._client.close()
            registry = metrics.registry
            m.timings.finished_at = utc_now()
            m.timings.seconds = round(seconds, 3)
            m.timings.events_per_s = round(m.counts.events / seconds, 2) if seconds > 0 else 0.0
            m.timings.model_seconds = round(
                registry.get_sample_value("riskstream_model_latency_seconds_sum") or 0.0, 3
            )
            m.timings.context_seconds = round(
                registry.get_sample_value("riskstream_context_latency_seconds_sum") or 0.0, 3
            )
            m.write(self.directory)


def prepare_replay(settings: Settings, options: ReplayOptions) -> Replay:
    """Load the model and pick the run id (nothing is created yet: that is :meth:`Replay.run`)."""
    if options.batch_size < 1:
        raise ReplayError("batch size must be at least 1")
    version = Registry(settings.model.registry_dir).resolve(options.model_version)
    model = loader_for(settings)(version)
    run_id = check_run_id(
        options.run_id or new_run_id(model.version, utc_now(), secrets.token_hex(2))
    )
    client = connect(settings.redis)
    try:
        return Replay(settings, options, model, run_id, client)
    except BaseException:  # e.g. the broker does not answer for the alert topic's partitions
        client.close()
        raise


def replay(settings: Settings, source: ReplaySource, options: ReplayOptions) -> RunManifest:
    """Prepare and run a replay; see the module docstring."""
    return prepare_replay(settings, options).run(source)


__all__ = [
    "Pacer",
    "Replay",
    "ReplayOptions",
    "batches",
    "namespace_for",
    "new_run_id",
    "output_topic_for",
    "prepare_replay",
    "replay",
]
