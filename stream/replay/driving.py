"""A replay on the batch driver (``stream.pipeline.driver``): its source, its sink, its steps.

* ``ReleasedBatches``: the input, cut into batches by the data alone (``run.batches``, then
  at label reveal times by the label-reveal clock, ``stream.context.reveal``), each stamped
  when it is released and released at the pace asked for. It owns its input whole and
  commits nothing (a topic source is read from offsets captured when it was opened).
* ``RunSink``: alerts to the run's topic; alerts and dead letters into the run's files once
  the broker acknowledged the alerts, so the files of a failed run hold no batch that did
  not get out.
* ``ReplaySteps``: the labels revealed before the batch, then the live scorer's ``BatchProcessor``
  (context, narratives, the model on the lane, outputs), and the run's bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tqdm.auto import tqdm

from models.inference import LoadedModel
from schemas import LabelEvent
from stream.context.reveal import RevealClock
from stream.context.store import ContextStore
from stream.kafka.clients import OutgoingMessage, TrackedProducer
from stream.kafka.errors import DeliveryFailed
from stream.pipeline.driver import Keep
from stream.pipeline.ends import Partition
from stream.pipeline.messages import Incoming, processing_clock_ms
from stream.replay.manifest import RunManifest
from stream.replay.outputs import DEAD_LETTERS_TO_FILE, RunFiles, ScoreCapture
from stream.replay.sources import SourceRecord, to_ms
from stream.scorer.core import EventWindow, ModelScores, PreparedBatch
from stream.scorer.processor import BatchOutputs, BatchProcessor, utc_now


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


class ReleasedBatches:
    """A replay's input as the driver's ``Source[Incoming]``."""

    def __init__(
        self,
        chunks: Iterable[list[SourceRecord]],
        *,
        clock: RevealClock,
        window: EventWindow,
        wait_for: Callable[[int | None], float],
        on_event_times: Callable[[int, int], None],
    ) -> None:
        """``chunks``: the batches (``run.batches``), cut again where ``clock`` reveals a
        label; ``wait_for``: the pacer; ``on_event_times(first, last)``: the event times a
        batch admits, as it is released."""
        self._chunks = iter(chunks)
        self._held: list[SourceRecord] = []
        """The rest of a chunk cut at a reveal time: the next batch."""
        self.clock = clock
        self._window = window
        self._wait_for = wait_for
        self._on_event_times = on_event_times
        self._exhausted = False
        self._owned: dict[Partition, int] = {}
        self._due: list[LabelEvent] = []

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def read(
        self, max_records: int, wait_s: float, until: Callable[[], bool] | None = None
    ) -> list[Incoming]:
        """The next batch (cut by the data, not by ``max_records``), released at its pace
        (``until`` plays no part: the pace is the replay's, not the model's)."""
        chunk: list[SourceRecord] | None = self._held or next(self._chunks, None)
        if chunk is None:
            self._exhausted = True
            return []
        messages = incomings(chunk, utc_now())
        # The run's clock moves with the events the window admits only: one event dated
        # decades ahead must not reveal every label at once.
        admitted = [
            r.event_time_ms
            if r.event_time_ms is not None
            and self._window.admits(r.event_time_ms, processing_clock_ms(m))
            else None
            for r, m in zip(chunk, messages, strict=True)
        ]
        taken, due = self.clock.take(admitted)
        batch, self._held = messages[:taken], chunk[taken:]
        self._due.extend(due)
        times = [t for t in admitted[:taken] if t is not None]
        if times:
            self._on_event_times(min(times), max(times))
        self._wait_for(max(times) if times else None)
        for m in batch:
            self._owned.setdefault((m.topic, m.partition), 1)
        return batch

    def revealed(self) -> list[LabelEvent]:
        """The labels to apply before the batch last read (each handed out once)."""
        due, self._due = self._due, []
        return due

    def assignment(self) -> Mapping[Partition, int]:
        """Every partition read so far, for good: nobody else reads a replay's input."""
        return self._owned

    def pause(self, partitions: Collection[Partition]) -> None:
        """Nothing is fetched ahead: the input is read only when a batch is asked for."""

    def resume(self, partitions: Collection[Partition]) -> None:
        """See ``pause``."""

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """A replay commits nothing: its run is not the source's consumer group's."""

    def group(self) -> object:
        return None


class RunSink:
    """Alerts to the run's topic; alerts and dead letters to its files once delivered."""

    def __init__(self, producer: TrackedProducer, files: RunFiles) -> None:
        self._producer = producer
        self._files = files
        self._alerts: list[OutgoingMessage] = []
        self._dead: list[OutgoingMessage] = []

    @property
    def transactional(self) -> bool:
        return False

    def produce(self, messages: Sequence[OutgoingMessage]) -> None:
        to_kafka: list[OutgoingMessage] = []
        for message in messages:
            if message.topic == DEAD_LETTERS_TO_FILE:
                self._dead.append(message)
            else:
                to_kafka.append(message)
        if to_kafka:
            self._producer.produce_all(to_kafka)
            self._alerts.extend(to_kafka)

    def flush(self, timeout_s: float) -> None:
        if self._alerts:
            try:
                self._producer.flush_or_raise(timeout_s)
            except DeliveryFailed:
                self._alerts, self._dead = [], []  # the driver builds the batch again
                raise
        for message in self._dead:
            self._files.add_dead_letter(message)
        for message in self._alerts:
            self._files.add_alert(message)
        self._alerts, self._dead = [], []

    def begin(self) -> None:
        raise NotImplementedError("a replay's sink is not transactional")

    def commit_transaction(self, offsets: Mapping[Partition, int], group: object) -> None:
        raise NotImplementedError("a replay's sink is not transactional")

    def abort(self) -> None:
        raise NotImplementedError("a replay's sink is not transactional")


class ReplaySteps:
    """``Steps[Incoming, PreparedBatch, ModelScores, BatchOutputs]`` of a replay."""

    def __init__(
        self,
        *,
        processor: BatchProcessor,
        model: LoadedModel,
        store: ContextStore,
        records: ScoreCapture,
        files: RunFiles,
        release: ReleasedBatches,
        manifest: RunManifest,
        bar: tqdm[Any],
    ) -> None:
        self._processor, self._model = processor, model
        self._store, self._records, self._files = store, records, files
        self._release = release
        self._manifest, self._bar = manifest, bar
        self._due: list[LabelEvent] = []

    def prepare(self, batch: list[Incoming], meanwhile: Callable[[], None]) -> PreparedBatch:
        """The labels revealed before ``batch``, then step 1 of it; the batch in the lane is
        finished while Redis applies this one's context, if the model is done with it (as
        the live scorer does)."""
        # Kept until applied: the clock hands each label out once, and applying them is
        # idempotent, so a retried batch applies what a failed attempt may have.
        self._due.extend(self._release.revealed())
        if self._due:
            self._store.apply_labels(self._due)
            self._due = []
            schedule = self._release.clock.schedule
            self._manifest.labels.revealed = schedule.revealed if schedule is not None else 0
        begun = self._processor.begin(batch, self._model)
        meanwhile()
        return self._processor.complete(begun)

    def score(self, prepared: PreparedBatch) -> ModelScores:
        return self._processor.score(prepared)

    def finish(self, prepared: PreparedBatch, scores: ModelScores, keep: Keep) -> BatchOutputs:
        self._records.discard()  # what a failed attempt captured is written again
        return self._processor.finish(prepared, scores, keep=lambda m: keep((m.topic, m.partition)))

    def done(self, batch: list[Incoming], prepared: PreparedBatch, outputs: BatchOutputs) -> None:
        """Delivered: the scores into the run's file, and the counts."""
        self._files.add_scores(
            self._records.take(), batch, batch[0].received_at if batch else utc_now()
        )
        counts = self._manifest.counts
        counts.events += len(batch)
        counts.scored += outputs.scored
        counts.alerts += len(outputs.alerts)
        counts.dead_letters += outputs.dead
        counts.batches += 1
        self._bar.update(len(batch))
        self._bar.set_postfix(alerts=counts.alerts, refresh=False)
