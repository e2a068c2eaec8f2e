"""The scoring loop: consume a micro-batch, process it, deliver its outputs, commit.

Order of a batch (at-least-once, the default):

1. fill: up to ``batch_max_size`` messages, waiting at most ``batch_max_wait_ms`` after the
   first one arrived;
2. process: decode and check the event-time window, claim the event ids, update context in
   Redis, narrate, score in one model call, explain the alerts, persist what was scored - any
   event that one of these steps cannot take becomes a dead letter, the batch goes on;
3. deliver: produce alerts / scores / dead letters and wait until the broker acknowledged all
   of them; only then commit the batch's offsets.

Any failure in 2-3 that can pass (Redis or the broker away) pauses the partitions, backs off
and retries the same batch; nothing is committed until the batch is through, so a crash at
any point means reprocessing, never loss. Reprocessing is harmless: a redelivered event gets
its recorded context, score and alert id (docs/scorer.md, "Idempotency"), context updates are
idempotent per event id, and alert ids are deterministic.

Exactly-once mode replaces step 3 by a Kafka transaction holding the outputs and the offsets.

**Overlap.** Step 2 is split around the model calls (``BatchProcessor.prepare`` / ``score``
/ ``finish``), and the model calls - scores, then the alerts' reasons - run on a worker thread
(the model lane): while the model scores batch n, this thread fills batch n+1, decodes it,
claims its ids, applies its context and builds its narratives; then it hands batch n+1 to the
lane and builds, delivers and commits batch n's outputs. Everything that touches Kafka or
Redis stays on this one thread, in batch order, so context updates, outputs and commits keep
the order of the sequential loop: the only thing that runs ahead is the next batch's context
update, which is idempotent per event id and, were the worker to die, reprocessed from the
last commit like any batch in hand.
While a batch is in the lane, the next one also closes when the lane comes free, so an event
waits for at most one model call it is not part of. And when the model is done with batch n
by the time batch n+1's context update is handed to Redis (a fast model), batch n is
delivered while Redis works, instead of after: the Redis wait overlaps the delivery.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from models.inference import LoadedModel
from stream.context.errors import ContextLayoutMismatch, ContextStateLost
from stream.context.store import ContextStore
from stream.kafka.clients import TrackedProducer, consumer_config, producer_config
from stream.kafka.errors import DeliveryFailed, FlushTimeout
from stream.pipeline.health import Health
from stream.pipeline.lane import ModelLane
from stream.pipeline.messages import Incoming
from stream.pipeline.records import ScoredRecordStore
from stream.pipeline.retry import BACKOFF, INFRASTRUCTURE_ERRORS
from stream.scorer.core import AlertMode, EventWindow, ModelScores, PreparedBatch, next_offsets
from stream.scorer.errors import ScorerFatal, ShutdownIncomplete
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.model_source import ChampionWatcher
from stream.scorer.processor import (
    BatchOutputs,
    BatchProcessor,
    NarratorFactory,
    OutputTopics,
    utc_now,
)
from stream.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.2
# While a batch is in the model lane, the next one is filled in slices this long, to see
# the lane come free without blocking in the consumer for the whole of max_wait.
LANE_POLL_S = 0.005
# Commit errors after which the partitions belong to someone else: the batch's outputs are
# out, the new owner will reprocess it (harmless) - do not retry the commit.
_LOST_OWNERSHIP = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST,
}
# Client errors that waiting cannot fix: the broker refused our credentials. librdkafka would
# retry them forever and the scorer would sit there, "up" but doing nothing; ending it instead
# makes the misconfiguration visible at once (nothing uncommitted is lost by exiting).
_CREDENTIAL_ERRORS = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


def _position(message: Message) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:  # only for producer-side messages
        raise ScorerFatal("consumed a message without topic/partition/offset")
    return topic, partition, offset


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class ScorerRunner:
    """One scorer process: a consumer in the group, a producer, the context store, a model."""

    def __init__(
        self,
        settings: Settings,
        *,
        watcher: ChampionWatcher,
        store: ContextStore,
        records: ScoredRecordStore,
        narrator: NarratorFactory,
        metrics: ScorerMetrics,
        health: Health,
        shadow: LoadedModel | None = None,
        alert_mode: AlertMode = "live",
        top_reasons: int = 3,
    ) -> None:
        self._settings = settings
        self._s = settings.scorer
        self._watcher = watcher
        self._processor = BatchProcessor(
            store=store,
            records=records,
            narrator=narrator,
            metrics=metrics,
            topics=OutputTopics(
                alerts=settings.topics.alerts,
                dlq=settings.topics.dlq,
                shadow_alerts=settings.topics.alerts_shadow,
                scores=settings.topics.scores if settings.scorer.emit_scores else None,
            ),
            shadow=shadow,
            alert_mode=alert_mode,
            top_reasons=top_reasons,
            window=EventWindow.of(self._s.event_time_max_ahead_s, self._s.event_time_max_behind_s),
        )
        self.metrics = metrics
        self.health = health
        self._exactly_once = self._s.delivery == "exactly_once"
        self._stop = threading.Event()
        self._stop_requested_at: float | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._client_failure: KafkaError | None = None
        self._lane = ModelLane(self._processor.score)
        self._consumer = Consumer(
            consumer_config(
                settings.kafka,
                self._s.group_id,
                overrides={
                    "stats_cb": metrics.record_librdkafka_stats,
                    "statistics.interval.ms": 5000,
                    "error_cb": self._on_client_error,
                },
            )
        )
        transactional_id = (
            f"{self._s.transactional_id}-{uuid.uuid4().hex[:12]}" if self._exactly_once else None
        )
        self._producer = TrackedProducer(
            producer_config(
                settings.kafka,
                transactional_id=transactional_id,
                overrides={
                    "queue.buffering.max.messages": self._s.producer_queue_max_messages,
                    "error_cb": self._on_client_error,
                },
            ),
            on_queue_full=metrics.producer_queue_full.inc,
        )
        metrics.set_model(watcher.current.version)

    # -- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in flight, commit, and leave (SIGTERM / SIGINT)."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Score until asked to stop. Returns the process exit code."""
        topic = self._settings.topics.transactions
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "scoring %s as group %s (%s, batches of <= %d, <= %d ms), model %s",
            topic, self._s.group_id, self._s.delivery, self._s.batch_max_size,
            self._s.batch_max_wait_ms, self._watcher.current.version,
        )  # fmt: skip
        code = 0
        try:
            if self._exactly_once:
                self._init_transactions()
            self.health.set_ready("starting")
            while not self._stop.is_set():
                self.health.beat()
                self._swap_model_if_ready()
                with self.metrics.stage("poll"):
                    batch = self._fill_batch()
                self._check_clients()
                self._advance(self._prepare_until_done(batch) if batch else None)
            self._advance(None)  # the batch still in the lane: finish and commit it
        except ShutdownIncomplete as exc:
            log.error("%s", exc)
            code = 1
        except (ScorerFatal, ContextStateLost, ContextLayoutMismatch) as exc:
            # ContextStateLost: Redis came back empty; an operator decides (docs/scorer.md).
            # ContextLayoutMismatch: the namespace holds state of an older layout.
            # The batch in hand is not committed, so nothing is skipped either way.
            log.critical("scorer cannot continue: %s", exc)
            code = 2
        finally:
            self._close()
        return code

    def _init_transactions(self) -> None:
        try:
            self._producer.raw.init_transactions(30)
        except KafkaException as exc:
            self._check_clients()  # the likely reason, if it was the credentials
            raise ScorerFatal(f"cannot start transactions: {exc.args[0].str()}") from exc

    def _on_client_error(self, error: KafkaError) -> None:
        """``error_cb`` of the consumer and the producer (served from their poll calls).

        librdkafka reports connection-level trouble here; it retries that itself, and logs it,
        so only what retrying cannot fix is kept, for ``_check_clients`` to act on."""
        if error.code() in _CREDENTIAL_ERRORS or error.fatal():
            self._client_failure = error

    def _check_clients(self) -> None:
        error = self._client_failure
        if error is None:
            return
        if error.code() in _CREDENTIAL_ERRORS:
            raise ScorerFatal(
                f"Kafka refused the credentials of user {self._settings.kafka.sasl_username!r} "
                f"at {self._settings.kafka.bootstrap_servers}: {error.str()}"
            )
        raise ScorerFatal(f"Kafka client failed: {error.str()}")

    def _close(self) -> None:
        try:
            self._lane.close()
            if not self._exactly_once:
                self._producer.raw.flush(10)
        finally:
            self._consumer.close()  # leaves the group now, so partitions move without delay
        log.info("scorer stopped")

    # -- the consumer group ---------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)
        # Cooperative rebalancing hands out increments; log the increment and the result.
        log.info(
            "assigned %s, now reading %s",
            sorted(p.partition for p in partitions),
            sorted(p for _, p in self._assigned),
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Work in flight for these partitions is dropped, not committed: the new owner gets it
        # again from the last commit. Nothing is produced for it twice except a batch that was
        # already mid-delivery, and those duplicates share alert ids.
        self._assigned.difference_update((p.topic, p.partition) for p in partitions)
        for p in partitions:  # lag of a partition we no longer read is someone else's to report
            self.metrics.forget_partition(p.topic, p.partition)
        log.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)

    def _owned(self, batch: Sequence[Incoming]) -> list[Incoming]:
        return [m for m in batch if (m.topic, m.partition) in self._assigned]

    def _owns(self, message: Incoming) -> bool:
        return (message.topic, message.partition) in self._assigned

    # -- batches ------------------------------------------------------------------------

    def _fill_batch(self) -> list[Incoming]:
        max_size = self._s.batch_max_size
        # consume(n, timeout) returns only when it has n messages or the timeout ran out, so
        # asking for a whole batch with the idle timeout held every live batch ~200 ms before
        # max_wait even started (measured: p50 event->score 650 ms at half the maximum rate).
        # Take what is already fetched; otherwise wait for one message only; then max_wait.
        # With a batch in the lane, the wait for a first message, and then max_wait, also end
        # when the lane comes free: the model would otherwise idle while this batch waits.
        in_lane = self._lane.busy
        messages = self._consumer.consume(max_size, timeout=0)
        if not messages:
            messages = self._first_messages(in_lane)
            if not messages:
                return []
        deadline = time.monotonic() + self._s.batch_max_wait_ms / 1000
        while len(messages) < max_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (in_lane is not None and in_lane.done()):
                break
            wait = remaining if in_lane is None else min(remaining, LANE_POLL_S)
            messages.extend(self._consumer.consume(max_size - len(messages), timeout=wait))
        received_at = utc_now()
        batch = [self._incoming(m, received_at) for m in messages if self._usable(m)]
        self.metrics.events_in.inc(len(batch))
        return self._owned(batch)

    def _first_messages(self, in_lane: Future[ModelScores] | None) -> list[Message]:
        if in_lane is None:
            return self._consumer.consume(1, timeout=IDLE_POLL_S)
        deadline = time.monotonic() + IDLE_POLL_S
        while not in_lane.done() and time.monotonic() < deadline:
            messages = self._consumer.consume(1, timeout=LANE_POLL_S)
            if messages:
                return messages
        return []

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() in _CREDENTIAL_ERRORS:
            self._client_failure = error
            self._check_clients()
        if error.fatal():
            raise ScorerFatal(f"consumer error: {error.str()}")
        log.warning("consumer: %s", error.str())
        return False

    @staticmethod
    def _incoming(message: Message, received_at: datetime) -> Incoming:
        ts_type, ts = message.timestamp()
        topic, partition, offset = _position(message)
        headers = message.headers() or []
        items = headers.items() if isinstance(headers, dict) else headers
        return Incoming(
            topic=topic,
            partition=partition,
            offset=offset,
            key=_as_bytes(message.key()),
            value=_as_bytes(message.value()),
            headers=tuple((name, _as_bytes(value) or b"") for name, value in items),
            timestamp_ms=ts if ts_type != 0 else None,  # 0: TIMESTAMP_NOT_AVAILABLE
            received_at=received_at,
        )

    def _prepare_until_done(self, batch: list[Incoming]) -> PreparedBatch | None:
        """Step 1 of ``batch`` (decode, claims, context, narratives), retried while Redis is
        away. None: every partition of the batch moved on meanwhile. Batches are finished in
        order whichever of this and ``_advance`` finishes the previous one."""
        attempt = 0
        while True:
            batch = self._owned(batch)
            if not batch:
                return None
            try:
                begun = self._processor.begin(batch, self._watcher.current)
                # While Redis applies this batch's context: deliver the batch in the lane if
                # the model is done with it (a fast model's lane is idle anyway).
                scored = self._lane.take_if_done()
                if scored is not None:
                    self._finish_until_done(*scored)
                return self._processor.complete(begun)
            except INFRASTRUCTURE_ERRORS as exc:  # retried after a pause (retry.py)
                attempt += 1
                self._retry_after(exc, attempt, len(batch))

    def _advance(self, prepared: PreparedBatch | None) -> None:
        """Hand ``prepared`` to the model lane and finish the batch that was in it: the model
        scores batch n+1 while batch n's outputs are built, delivered and committed."""
        scored = self._lane.push(prepared)
        if scored is not None:
            self._finish_until_done(*scored)

    def _finish_until_done(self, prepared: PreparedBatch, scores: ModelScores) -> None:
        """Step 3 of a scored batch and its delivery, retried while Redis or the broker is
        away; only the events of partitions still assigned are delivered and committed."""
        attempt = 0
        while True:
            batch = self._owned(prepared.batch)
            if not batch:
                log.info("batch of %d dropped: its partitions moved on", len(prepared.batch))
                return
            try:
                outputs = self._processor.finish(prepared, scores, keep=self._owns)
                self._deliver(batch, outputs)
            except INFRASTRUCTURE_ERRORS as exc:  # retried after a pause (retry.py)
                attempt += 1
                self._retry_after(exc, attempt, len(batch))
                continue
            self.health.set_ready("retrying")
            self._record_success(batch, outputs, prepared.model)
            return

    def _retry_after(self, exc: Exception, attempt: int, batch_size: int) -> None:
        self.metrics.retries.labels(type(exc).__name__).inc()
        self.health.set_not_ready("retrying", f"{type(exc).__name__}: {exc}")
        delay = BACKOFF.delay(attempt)
        log.warning(
            "batch of %d failed (attempt %d: %s), retrying in %.1fs",
            batch_size, attempt, exc, delay,
        )  # fmt: skip
        self._check_shutdown_bound(batch_size)
        self._wait_paused(delay)

    def _check_shutdown_bound(self, batch_size: int) -> None:
        if self._stop_requested_at is None:
            return
        if time.monotonic() - self._stop_requested_at > self._s.shutdown_timeout_s:
            raise ShutdownIncomplete(
                f"shutdown bound of {self._s.shutdown_timeout_s:.0f}s reached with a batch of "
                f"{batch_size} unfinished; it was not committed and will be reprocessed"
            )

    def _wait_paused(self, seconds: float) -> None:
        """Back off without consuming, while staying in the group (poll serves callbacks)."""
        partitions = [TopicPartition(t, p) for t, p in self._assigned]
        if partitions:
            self._consumer.pause(partitions)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self.health.beat()
                self._check_clients()
                message = self._consumer.poll(min(0.1, max(deadline - time.monotonic(), 0)))
                if message is not None and message.error() is None:
                    # Cannot happen for paused partitions; a newly assigned one could deliver.
                    # It is not lost: it was never committed, and we rewind to it on resume.
                    self._consumer.seek(TopicPartition(*_position(message)))
        finally:
            partitions = [TopicPartition(t, p) for t, p in self._assigned]
            if partitions:
                self._consumer.resume(partitions)

    # -- processing ---------------------------------------------------------------------

    # -- delivery -------------------------------------------------------------------------

    def _deliver(self, batch: list[Incoming], outputs: BatchOutputs) -> None:
        if self._exactly_once:
            with self.metrics.stage("transaction"):
                self._deliver_in_transaction(batch, outputs)
            return
        with self.metrics.stage("produce"):
            self._producer.produce_all(outputs.messages)
            while True:
                try:
                    self._producer.flush_or_raise(timeout_s=1.0)
                    break
                except FlushTimeout as exc:
                    # The broker is away; librdkafka keeps the messages and retries them. Wait
                    # (paused, staying in the group) instead of producing them a second time.
                    self.health.set_not_ready("flush", str(exc))
                    self._check_shutdown_bound(len(batch))
                    self._wait_paused(0.5)
        self.health.set_ready("flush")
        with self.metrics.stage("commit"):
            self._commit(next_offsets(batch))

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        attempt = 0
        while True:
            owned = [
                TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in self._assigned
            ]
            if not owned:
                if offsets:  # every partition of the batch was revoked while it was processed
                    log.info("commit skipped: %d partitions no longer assigned", len(offsets))
                return
            try:
                self._consumer.commit(offsets=owned, asynchronous=False)
                self.metrics.commits.inc()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in _LOST_OWNERSHIP:
                    log.info("commit skipped, partitions moved on: %s", error.str())
                    return
                if error.fatal():
                    raise ScorerFatal(f"commit failed: {error.str()}") from exc
                attempt += 1
                self.metrics.retries.labels("CommitFailed").inc()
                log.warning("commit failed (attempt %d): %s", attempt, error.str())
                self._check_shutdown_bound(len(owned))
                self._wait_paused(BACKOFF.delay(attempt))

    def _deliver_in_transaction(self, batch: list[Incoming], outputs: BatchOutputs) -> None:
        producer = self._producer.raw
        offsets = [
            TopicPartition(t, p, o)
            for (t, p), o in next_offsets(batch).items()
            if (t, p) in self._assigned
        ]
        try:
            producer.begin_transaction()
            self._producer.produce_all(outputs.messages)
            producer.send_offsets_to_transaction(
                offsets, self._consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(60)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            self._producer.forget()
            if error.txn_requires_abort():
                producer.abort_transaction(30)
                raise DeliveryFailed([f"transaction aborted: {error.str()}"]) from exc
            if error.retriable():
                raise DeliveryFailed([f"transaction failed (retriable): {error.str()}"]) from exc
            raise ScorerFatal(f"transaction failed: {error.str()}") from exc
        self._producer.forget()
        self.metrics.commits.inc()

    # -- bookkeeping ------------------------------------------------------------------------

    def _record_success(
        self, batch: list[Incoming], outputs: BatchOutputs, model: LoadedModel
    ) -> None:
        self.metrics.batch_size.observe(len(batch))
        self.metrics.events_scored.labels(model.version).inc(outputs.scored)
        now_ms = time.time() * 1000
        for alert, ts_ms in zip(outputs.alerts, outputs.incoming_ts_ms, strict=True):
            self.metrics.alerts.labels(alert.typology.value, alert.mode).inc()
            if ts_ms is not None:
                self.metrics.event_to_alert.observe(max(now_ms - ts_ms, 0.0) / 1000)

    def _swap_model_if_ready(self) -> None:
        swapped = self._watcher.swap_if_ready()
        if swapped is not None:
            self.metrics.set_model(swapped.version)
            self.metrics.model_swaps.inc()
        shadow = self._watcher.swap_shadow_if_ready()
        if shadow is not None:
            self._processor.shadow = shadow[0]
