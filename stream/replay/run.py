"""The replay loop: a bounded source through the live scorer's ``BatchProcessor``, into a run
isolated from production.

    source ──► batches of N ──► labels due by the event-time clock ──► ContextStore (own namespace)
                             └─► BatchProcessor.process (decode → context → narrate → score →
                                 explain → persist; the very code `riskstream run scorer` runs)
                                 ├─► alerts ──► <alerts topic>.backtest.<run-id> + alerts.jsonl
                                 ├─► every score ──► scores.parquet
                                 └─► dead letters ──► dead_letters.jsonl

Isolation: the run's Redis namespace is ``backtest-<run-id>`` (context and scored records; a
run id already used is refused, and the namespace is deleted at the end unless kept), its alerts
go to a topic of its own created for it, and its source is read without committing offsets.

Determinism: a batch is a function of the input order alone (N events; with pacing, also cut
where the event-time gap exceeds ``scorer.batch_max_wait_ms`` × speed), the source's order is a
function of the data (see ``sources``), context updates are exact whatever the batching, and
labels count only from their reveal time. So the same input, model, batch size and speed give
the same alerts (ids, scores, typologies, reasons, narratives) and the same scores every time.
Only the wall-clock fields differ: ``received_at``, ``scored_at`` and ``emitted_at`` stay real
times because the report's latency figures are made of them.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from confluent_kafka.admin import AdminClient
from tqdm.auto import tqdm

from models.inference import LoadedModel
from models.registry import Registry
from stream.context.errors import ContextUnavailable
from stream.context.keys import marker_key
from stream.context.store import ContextStore
from stream.kafka.clients import OutgoingMessage, TrackedProducer, producer_config
from stream.kafka.errors import DeliveryFailed, FlushTimeout
from stream.kafka.topics import DEFAULT_PARTITIONS, ensure_topics
from stream.pipeline.lane import ModelLane
from stream.pipeline.messages import Incoming, processing_clock_ms
from stream.pipeline.retry import BACKOFF, INFRASTRUCTURE_ERRORS
from stream.redis_client import AnyRedis, connect
from stream.replay.errors import ReplayError, RunExists
from stream.replay.labels import LabelSchedule
from stream.replay.manifest import LabelsUsed, RunManifest, RunTimings, check_run_id
from stream.replay.manifest import run_dir as run_dir_for
from stream.replay.outputs import DEAD_LETTERS_TO_FILE, RunFiles, ScoreCapture
from stream.replay.sources import ReplaySource, SourceRecord, from_ms, to_ms
from stream.scorer.app import loader_for, narrator_for
from stream.scorer.core import BegunBatch, EventWindow, ModelScores, PreparedBatch
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.processor import (
    BatchOutputs,
    BatchProcessor,
    OutputTopics,
    utc_now,
)
from stream.settings import Settings

log = logging.getLogger(__name__)

_T = TypeVar("_T")
MAX_ATTEMPTS = 8
DELIVERY_WAIT_S = 120.0


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


def incoming(record: SourceRecord, received_at: datetime, clock_ms: int | None = None) -> Incoming:
    """A source record as the scorer's processor takes it, read at ``received_at``."""
    return Incoming(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
        timestamp_ms=record.timestamp_ms,
        received_at=received_at,
        clock_ms=clock_ms,
    )


def incomings(chunk: Sequence[SourceRecord], received_at: datetime) -> list[Incoming]:
    """A batch of source records for the processor. A record without a broker timestamp (a
    file's line) has no time it entered a stream for the event-time window to be judged by;
    its processing clock is its own event time, but never later than now: an event dated in
    the future of the replay itself is refused (history cannot come from the future), while
    old events are never "behind" - a file is the operator's history, cut by a time range if
    need be. (A batch statistic would not do: a batch of a sparse file spans hours.)"""
    now_ms = to_ms(received_at)
    return [
        incoming(
            r,
            received_at,
            None
            if r.timestamp_ms is not None or r.event_time_ms is None
            else min(r.event_time_ms, now_ms),
        )
        for r in chunk
    ]


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


def _retrying(action: Callable[[], _T], what: str, on_failure: Callable[[], None]) -> _T:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return action()
        except INFRASTRUCTURE_ERRORS as exc:
            on_failure()
            if attempt == MAX_ATTEMPTS:
                raise
            delay = BACKOFF.delay(attempt)
            log.warning("%s failed (attempt %d: %s), retrying in %.1fs", what, attempt, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


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
        options, labels = self.options, self.options.labels
        speed = options.speed
        span_ms = self.settings.scorer.batch_max_wait_ms * speed if speed else None
        scorer = self.settings.scorer
        window = EventWindow.of(scorer.event_time_max_ahead_s, scorer.event_time_max_behind_s)
        pacer = Pacer(speed)
        clock_ms: int | None = None
        lane = ModelLane(processor.score)
        with (
            closing(lane),
            tqdm(
                total=source.total,
                unit="event",
                unit_scale=True,
                desc=f"replay {self.run_id}",
                disable=not options.progress,
            ) as bar,
        ):
            for chunk in batches(source.records(), options.batch_size, span_ms):
                received_at = utc_now()
                batch = incomings(chunk, received_at)
                # The run's clock moves with the events the window admits only: one event
                # dated decades ahead must not reveal every label at once.
                times = [
                    r.event_time_ms
                    for r, m in zip(chunk, batch, strict=True)
                    if r.event_time_ms is not None
                    and window.admits(r.event_time_ms, processing_clock_ms(m))
                ]
                if times:
                    newest = max(times)
                    clock_ms = newest if clock_ms is None else max(clock_ms, newest)
                    self._widen_event_times(min(times), newest)
                pacer.wait_for(max(times) if times else None)
                if labels is not None and clock_ms is not None:
                    due = labels.due(from_ms(clock_ms))
                    if due:
                        _retrying(partial(store.apply_labels, due), "applying labels", _nothing)
                        self.manifest.labels.revealed = labels.revealed
                # The model scores this batch on the lane while the previous one is finished
                # here: the same overlap as the live scorer (stream.pipeline.lane).
                prepared = self._prepare(processor, lane, batch, records, producer, files, bar)
                scored = lane.push(prepared)
                if scored is not None:
                    self._complete(processor, *scored, records, producer, files, bar)
            scored = lane.push(None)
            if scored is not None:
                self._complete(processor, *scored, records, producer, files, bar)

    def _prepare(
        self,
        processor: BatchProcessor,
        lane: ModelLane[PreparedBatch, ModelScores],
        batch: list[Incoming],
        records: ScoreCapture,
        producer: TrackedProducer,
        files: RunFiles,
        bar: tqdm[Any],
    ) -> PreparedBatch:
        """Step 1 of ``batch``; the batch in the lane is finished while Redis applies this
        one's context if the model is done with it (as the live scorer does).

        Only step 1 is retried here: the lane's batch is completed (with its own retries) at
        most once, so a batch whose outputs cannot be delivered fails the run instead of being
        dropped by a retry of the next one."""
        try:
            begun: BegunBatch | None = processor.begin(batch, self.model)
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("batch failed (%s); retrying it after the batch in the lane", exc)
            begun = None
        scored = lane.take_if_done()
        if scored is not None:
            self._complete(processor, *scored, records, producer, files, bar)
        if begun is not None:
            try:
                return processor.complete(begun)
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning("batch failed (%s); retrying it", exc)
        return _retrying(partial(processor.prepare, batch, self.model), "batch", _nothing)

    def _complete(
        self,
        processor: BatchProcessor,
        prepared: PreparedBatch,
        scores: ModelScores,
        records: ScoreCapture,
        producer: TrackedProducer,
        files: RunFiles,
        bar: tqdm[Any],
    ) -> None:
        """A scored batch's outputs: built, delivered, written to the run's files, counted."""
        outputs = _retrying(partial(processor.finish, prepared, scores), "batch", records.discard)
        self._deliver(producer, outputs, files)
        batch = prepared.batch
        files.add_scores(records.take(), batch, batch[0].received_at if batch else utc_now())
        counts = self.manifest.counts
        counts.events += len(batch)
        counts.scored += outputs.scored
        counts.alerts += len(outputs.alerts)
        counts.dead_letters += outputs.dead
        counts.batches += 1
        bar.update(len(batch))
        bar.set_postfix(alerts=counts.alerts, refresh=False)

    def _widen_event_times(self, first_ms: int, last_ms: int) -> None:
        first, last = from_ms(first_ms), from_ms(last_ms)
        m = self.manifest
        m.event_time_first = first if m.event_time_first is None else min(m.event_time_first, first)
        m.event_time_last = last if m.event_time_last is None else max(m.event_time_last, last)

    def _deliver(self, producer: TrackedProducer, outputs: BatchOutputs, files: RunFiles) -> None:
        """Produce the batch's alerts and wait for the broker's acknowledgement of every one
        before the next batch, so a failed run never leaves a gap in the middle of its topic."""
        to_kafka: list[OutgoingMessage] = []
        for message in outputs.messages:
            if message.topic == DEAD_LETTERS_TO_FILE:
                files.add_dead_letter(message)
            else:
                to_kafka.append(message)
        if not to_kafka:
            return
        for attempt in (1, 2, 3):
            producer.produce_all(to_kafka)
            deadline = time.monotonic() + DELIVERY_WAIT_S
            try:
                while True:
                    try:
                        producer.flush_or_raise(timeout_s=1.0)
                        break
                    except FlushTimeout:
                        if time.monotonic() > deadline:
                            raise
                break
            except DeliveryFailed as exc:
                if attempt == 3:
                    raise
                log.warning("alerts not delivered (attempt %d): %s; producing again", attempt, exc)
        for message in to_kafka:
            files.add_alert(message)

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


def _nothing() -> None:
    """Applying labels is idempotent: a failed attempt leaves nothing to undo."""


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
