"""The trainer worker: a faust app with one agent on ``topics.labels`` and one timer.

Acknowledgements and offsets. The agent iterates a ``noack()`` stream and acknowledges a
label explicitly, after it was persisted (context store + case store) or dead-lettered with
a confirmed delivery. faust commits, every ``broker_commit_interval`` and when partitions are
revoked or the worker stops, the offset after the last *contiguous* acknowledged message of
each partition; an unacknowledged label therefore holds the committed offset back and is
read again by the next owner of the partition. With faust's default auto-ack, the message
whose processing raised is acknowledged anyway when its stream iterator is finalised, and
committed (the failure mode of faust issues #315/#527): here nothing is acknowledged on
failure. Retriable failures (Redis away, DLQ delivery) are retried in place, with backoff,
until they succeed or the worker stops; anything else stops the worker with exit code 2
without acknowledging, so the label is processed again after a restart. Reprocessing is
harmless: every write is idempotent per label id.

Concurrency 1 and no ``take()`` batching: ``take()`` acknowledges a whole buffer even when
processing it failed. Labels are few (analyst decisions, chargebacks), so one at a time is
plenty. Redis I/O runs in a worker thread, the fine-tune in a child process (``loop``): the
event loop stays free for the consumer, the producer and the timer. ``stream_wait_empty`` is
off, so a stop does not wait for a label that will never be acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import UnsupportedCodecError
from faust.types import EventT, StreamT

from schemas import LabelEvent, decode
from schemas.errors import DecodeError
from stream.context.store import ContextStore
from stream.kafka.groups import GroupOffsetsUnavailable
from stream.pipeline.dead_letters import DeadLetter, dead_letter_message
from stream.pipeline.health import Health, MetricsServer
from stream.pipeline.messages import Incoming
from stream.pipeline.records import ScoredRecordStore
from stream.pipeline.retry import BACKOFF
from stream.pipeline.startup import mark_if_new, wait_for_context_store
from stream.redis_client import connect
from stream.settings import KafkaSettings, Settings
from stream.trainer.cases import JoinOutcome
from stream.trainer.ingest import RETRIABLE, LabelIngestor
from stream.trainer.loop import FeedbackLoop
from stream.trainer.metrics import TrainerMetrics
from stream.trainer.store import MAX_UNJOINED, CaseStore, RecordSampler

log = logging.getLogger(__name__)

EXIT_FATAL = 2
EXIT_SHUTDOWN_TIMEOUT = 3


def faust_credentials(kafka: KafkaSettings) -> faust.auth.Credentials | None:
    """``settings.kafka`` as faust/aiokafka credentials (TLS context and SASL)."""
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
        context.check_hostname = kafka.ssl_endpoint_identification
        if kafka.ssl_certificate_location is not None:
            context.load_cert_chain(
                str(kafka.ssl_certificate_location),
                str(kafka.ssl_key_location) if kafka.ssl_key_location else None,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # KafkaSettings validates SASL_* settings
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    return None


def faust_brokers(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")]


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    items = raw.items() if isinstance(raw, dict) else (raw or [])
    return tuple(
        (str(name), value.encode() if isinstance(value, str) else bytes(value or b""))
        for name, value in items
    )


class TrainerWorker:
    """Everything one trainer process holds; :meth:`run` until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        ts = settings.trainer
        self.metrics = TrainerMetrics()
        self.health = Health(stall_after_s=max(60.0, 6 * ts.check_every_s))
        self.context: ContextStore = wait_for_context_store(settings)
        self._mark_context_namespace()
        client = connect(settings.redis)
        self.cases = CaseStore(
            client,
            settings.context.namespace,
            max_cases=ts.max_cases,
            ttl_s=ts.cases_ttl_days * 86_400,
            max_unjoined=MAX_UNJOINED,
        )
        self.ingestor = LabelIngestor(
            context=self.context,
            records=ScoredRecordStore(
                client, settings.context.namespace, settings.scorer.scored_ttl_days * 86_400
            ),
            cases=self.cases,
            metrics=self.metrics,
            scored_ttl_s=settings.scorer.scored_ttl_days * 86_400,
            unjoined_keep_s=ts.unjoined_keep_hours * 3600,
        )
        self.loop = FeedbackLoop(
            settings,
            cases=self.cases,
            ingestor=self.ingestor,
            sampler=RecordSampler(client, settings.context.namespace, ts.records_scan_budget),
            metrics=self.metrics,
        )
        self.exit_code = 0
        self.app = self._build_app()
        self._worker: faust.Worker | None = None
        self._stopping: asyncio.Future[None] | None = None

    def _mark_context_namespace(self) -> None:
        """A first start marks the context namespace (as the scorer's does); a namespace Redis
        lost is left unmarked, and labels wait, retried, until a scorer marks it."""
        s = self.settings
        try:
            marked = mark_if_new(self.context, s.kafka, s.trainer.group_id, s.topics.labels)
        except GroupOffsetsUnavailable as exc:
            log.warning("%s; labels wait until the context namespace is marked", exc)
            return
        if not marked:
            log.error("context namespace %r is not marked in use although labels were "
                      "processed: Redis lost it; labels wait until a scorer is started with "
                      "--accept-context-loss", s.context.namespace)  # fmt: skip

    # --- the faust app ------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        # faust creates "<id>-data/v1/tables" in the working directory by default; with the
        # memory store nothing is ever written there, so the empty tree is kept out of the
        # user's (and the repository's) way. faust does not create parents.
        datadir = Path(tempfile.gettempdir()) / "riskstream-faust" / s.trainer.group_id
        datadir.parent.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            s.trainer.group_id,
            broker=faust_brokers(s.kafka),
            broker_credentials=faust_credentials(s.kafka),
            broker_client_id=f"{s.kafka.client_id}-trainer",
            store="memory://",
            datadir=datadir,
            web_enabled=False,
            autodiscover=False,
            topic_disable_leader=True,  # no internal topic: nothing here needs a leader
            topic_allow_declare=False,  # topics come from `riskstream topics create`
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            broker_commit_interval=1.0,
            producer_acks=-1,
        )
        labels = app.topic(s.topics.labels, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")  # fmt: skip
        self._dlq = app.topic(s.topics.dlq, key_serializer="raw", value_serializer="raw")

        async def consume_labels(stream: StreamT[bytes]) -> None:
            manual = cast("faust.Stream[bytes]", stream).noack()
            async for event in manual.events():
                await self._handle(event)
                await manual.ack(event)

        app.agent(labels, name="labels", concurrency=1)(consume_labels)

        async def tick() -> None:
            self.health.beat()
            try:
                await self.loop.tick()
            except RETRIABLE as exc:
                log.warning("feedback loop tick postponed: %s", exc)
            except Exception:  # the timer must outlive a bad tick; ingestion goes on
                log.exception("feedback loop tick failed")

        app.timer(interval=s.trainer.check_every_s, name="feedback-loop")(tick)

        def before_shutdown(_sender: Any, /, *_: Any, signal: Any, **__: Any) -> Awaitable[None]:
            return self._before_shutdown()

        app.on_before_shutdown.connect(before_shutdown)
        return app

    async def _before_shutdown(self) -> None:
        # A bound on shutdown: the supervisor sees a failure rather than a hang.
        limit = self.settings.trainer.shutdown_timeout_s + 10
        timer = threading.Timer(limit, os._exit, args=(EXIT_SHUTDOWN_TIMEOUT,))
        timer.daemon = True
        timer.start()
        await self.loop.stop()

    async def _handle(self, event: EventT[bytes]) -> None:
        """Process one label until it is persisted or dead-lettered (see the module doc)."""
        message = event.message
        source = f"{message.topic}[{message.partition}]@{message.offset}"
        self.health.beat()
        try:
            label = decode(LabelEvent, event.value)
        except DecodeError as error:
            await self._retrying(self._dead_letter, event, error.reason)
            await self._retrying(asyncio.to_thread, self.cases.count_outcome, JoinOutcome.INVALID)
            self.metrics.labels.labels(JoinOutcome.INVALID.value).inc()
            log.warning("dead letter %s: %s", source, error.reason)
            return
        await self._retrying(asyncio.to_thread, self.ingestor.ingest, label, source)

    async def _retrying(self, fn: Any, *args: Any) -> Any:
        attempt = 0
        while True:
            try:
                result = await fn(*args)
            except (*RETRIABLE, AIOKafkaError) as exc:  # Redis or the broker away: try again
                attempt += 1
                delay = BACKOFF.delay(attempt)
                self.health.set_not_ready("retrying", f"{type(exc).__name__}: {exc}")
                log.warning("label processing failed (attempt %d: %s), retrying in %.1fs",
                            attempt, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._fatal(exc)
                raise  # not reached: _fatal never returns
            self.health.set_ready("retrying")
            return result

    async def _dead_letter(self, event: EventT[bytes], reason: str) -> None:
        message = event.message
        incoming = Incoming(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=_headers(message.headers),
            timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
            received_at=datetime.now(UTC),
        )
        out = dead_letter_message(
            DeadLetter(incoming, reason, "invalid_label"),
            self.settings.topics.dlq,
            datetime.now(UTC),
        )
        delivery = await self._dlq.send(key=out.key, value=out.value, headers=list(out.headers))
        await delivery  # acknowledged by the broker before the label is

    async def _fatal(self, exc: BaseException) -> None:
        """Stop the worker without acknowledging the label in hand (it is read again after
        a restart), and never return: the agent must not move on to later labels."""
        log.critical("trainer cannot continue: %r", exc, exc_info=exc)
        self.exit_code = EXIT_FATAL
        if self._worker is not None:
            self._stopping = asyncio.ensure_future(self._worker.stop())
        await asyncio.Event().wait()

    # --- running --------------------------------------------------------------------------------

    def run(self) -> int:
        ts = self.settings.trainer
        try:
            server = MetricsServer(
                ts.metrics_host, ts.metrics_port, self.metrics.registry, self.health
            ).start()
        except OSError as exc:
            log.critical(
                "trainer cannot start: metrics server on %s:%d: %s",
                ts.metrics_host, ts.metrics_port, exc,
            )  # fmt: skip
            self.context.close()
            return EXIT_FATAL
        self.health.set_ready("starting")
        log.info(
            "trainer consuming %s as group %s; fine-tune every %d cases or %.0f min; "
            "registry %s%s",
            self.settings.topics.labels, ts.group_id, ts.finetune_every_labels,
            ts.finetune_every_minutes, self.settings.model.registry_dir,
            " (shadow mode)" if ts.shadow_mode else "",
        )  # fmt: skip
        self._worker = faust.Worker(
            self.app,
            loglevel=self.settings.log.level,
            override_logging=False,
            redirect_stdouts=False,
            quiet=True,
        )
        try:
            self._worker.execute_from_commandline()
        except SystemExit:
            pass  # faust's own exit status does not say what happened; ours below does
        finally:
            server.stop()
            self.context.close()
        crash = self._worker.crash_reason or self.app.crash_reason
        if crash is not None and self.exit_code == 0:
            # A service inside faust crashed (e.g. the consumer met a batch it cannot
            # decode): faust stopped the worker; nothing after the last acknowledged label
            # was committed, so it is read again after the cause is fixed.
            log.critical("trainer cannot continue: %s", crash_line(crash))
            self.exit_code = EXIT_FATAL
        log.info("trainer stopped (exit %d)", self.exit_code)
        return self.exit_code


def crash_line(reason: BaseException) -> str:
    """One line for a crash inside faust/aiokafka, with the fix when it is a known one."""
    text = " ".join(f"{type(reason).__name__}: {reason}".split())
    if isinstance(reason, UnsupportedCodecError):
        text += (
            " - aiokafka needs its codec library to read compressed messages: install "
            "riskstream with its pinned dependencies (`pip install -c ops/constraints.txt .`, "
            "which brings cramjam)"
        )
    return text
