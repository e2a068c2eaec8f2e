"""The live scorer: a consumer in the group, a producer, the context store and a model, run on
the batch driver (``stream.pipeline.driver``, which says how a batch goes through: read,
process, deliver, commit, and the pauses and retries when Redis or the broker is away).

This module builds the Kafka clients and the driver's ends (``KafkaSource``, ``KafkaSink``),
starts transactions in exactly-once mode, turns the clients' unrecoverable failures and the
driver's fatal errors into exit codes, and closes everything; what a batch is for the scorer
(``ScorerSteps``) and what it does between and around batches (``ScorerHooks``: model swaps,
health, metrics) is in ``stream.scorer.driving``.

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
/ ``finish``), and the model calls - scores, then the alerts' reasons - run on the driver's
model lane: while the model scores batch n, the driver's thread fills batch n+1, decodes it,
claims its ids, applies its context and builds its narratives; then it hands batch n+1 to the
lane and builds, delivers and commits batch n's outputs. Everything that touches Kafka or
Redis stays on that one thread, in batch order, so context updates, outputs and commits keep
the order of a sequential loop: the only thing that runs ahead is the next batch's context
update, which is idempotent per event id and, were the worker to die, reprocessed from the
last commit like any batch in hand.
While a batch is in the lane, the next one also closes when the lane comes free, so an event
waits for at most one model call it is not part of. And when the model is done with batch n
by the time batch n+1's context update is handed to Redis (a fast model), batch n is
delivered while Redis works, instead of after: the Redis wait overlaps the delivery.
"""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException

from models.inference import LoadedModel
from stream.context.errors import ContextLayoutMismatch, ContextStateLost
from stream.context.store import ContextStore
from stream.kafka.clients import TrackedProducer, consumer_config, producer_config
from stream.pipeline.driver import BatchDriver, DriverLimits
from stream.pipeline.ends import Partition
from stream.pipeline.errors import ShutdownIncomplete, SinkFailed, SourceFailed
from stream.pipeline.health import Health
from stream.pipeline.kafka_ends import KafkaSink, KafkaSource
from stream.pipeline.messages import Incoming
from stream.pipeline.records import ScoredRecordStore
from stream.scorer.core import AlertMode, EventWindow, ModelScores, PreparedBatch
from stream.scorer.driving import ScorerHooks, ScorerSteps
from stream.scorer.errors import ScorerFatal
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.model_source import ChampionWatcher
from stream.scorer.processor import BatchOutputs, BatchProcessor, NarratorFactory, OutputTopics
from stream.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.2
# While a batch is in the model lane, the next one is filled in slices this long, to see
# the lane come free without blocking in the consumer for the whole of max_wait.
LANE_POLL_S = 0.005
# Client errors that waiting cannot fix: the broker refused our credentials. librdkafka would
# retry them forever and the scorer would sit there, "up" but doing nothing; ending it instead
# makes the misconfiguration visible at once (nothing uncommitted is lost by exiting).
_CREDENTIAL_ERRORS = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


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
        self._stop_requested = False
        self._driver: BatchDriver[Incoming, PreparedBatch, ModelScores, BatchOutputs] | None = None
        self._client_failure: KafkaError | None = None
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
        """Finish the batches in flight, commit, and leave (SIGTERM / SIGINT)."""
        self._stop_requested = True
        driver = self._driver
        if driver is not None:
            driver.request_stop()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def run(self) -> int:
        """Score until asked to stop. Returns the process exit code."""
        topic = self._settings.topics.transactions
        source = KafkaSource(
            self._consumer,
            [topic],
            fill_s=self._s.batch_max_wait_ms / 1000,
            slice_s=LANE_POLL_S,
            on_revoked=self._on_revoked,
            on_error=self._on_message_error,
        )
        hooks = ScorerHooks(
            self._processor, self._watcher, self.metrics, self.health, self._check_clients
        )
        steps = ScorerSteps(self._processor, self._watcher, self.metrics, self.health)
        driver = self._driver = BatchDriver(
            source,
            KafkaSink(self._producer, transactional=self._exactly_once),
            steps,
            limits=DriverLimits(
                max_records=self._s.batch_max_size,
                wait_s=IDLE_POLL_S,
                shutdown_s=self._s.shutdown_timeout_s,
            ),
            overlap=True,
            prefetch=steps,
            hooks=hooks,
            on_retry=hooks.retrying,
        )
        if self._stop_requested:  # a signal before the driver existed
            driver.request_stop()
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
            driver.run()
        except ShutdownIncomplete as exc:
            log.error("%s", exc)
            code = 1
        except (
            ScorerFatal, SourceFailed, SinkFailed, ContextStateLost, ContextLayoutMismatch,
        ) as exc:  # fmt: skip
            # SourceFailed / SinkFailed: a fatal consumer error, a transaction no retry helps
            # (fenced by a newer instance).
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

    def _on_message_error(self, error: KafkaError) -> None:
        """An error the consumer handed out in place of a message: refused credentials end
        the scorer now (the source itself ends it on a fatal one, and skips the rest)."""
        if error.code() in _CREDENTIAL_ERRORS:
            self._client_failure = error
            self._check_clients()

    def _check_clients(self) -> None:
        """Called by the hooks after every read and at every slice of a wait."""
        error = self._client_failure
        if error is None:
            return
        if error.code() in _CREDENTIAL_ERRORS:
            raise ScorerFatal(
                f"Kafka refused the credentials of user {self._settings.kafka.sasl_username!r} "
                f"at {self._settings.kafka.bootstrap_servers}: {error.str()}"
            )
        raise ScorerFatal(f"Kafka client failed: {error.str()}")

    def _on_revoked(self, partitions: list[Partition]) -> None:
        # Lag of a partition no longer read is someone else's to report. (Work in flight for
        # it is dropped by the driver, not committed: the new owner reads it again.)
        for topic, partition in partitions:
            self.metrics.forget_partition(topic, partition)

    def _close(self) -> None:
        try:
            if not self._exactly_once:
                self._producer.raw.flush(10)
        finally:
            self._consumer.close()  # leaves the group now, so partitions move without delay
        log.info("scorer stopped")
