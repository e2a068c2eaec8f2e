"""`riskstream run analyst`: the simulated analyst desk as a Kafka worker.

Reads ``topics.alerts`` in its own consumer group, looks every live alert's event up in the
simulator's truth, and writes the disposition (true or false positive, with the alert id) to
``topics.labels`` once the review delay has passed in event time (see :mod:`queue`). The
label id derives from the event id (``an-<event_id>``), so an alert read twice - a redelivery,
or the same event alerted again by a newer model - gives the same label, which the trainer
stores once. Alert offsets are committed only after their dispositions were acknowledged.

Missed fraud is not the desk's business: the simulator already writes a chargeback or
confirmed case for every suspicious event, alerted or not (``riskstream simulate --kafka``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from schemas import Alert, decode, encode
from schemas.errors import DecodeError
from stream.analyst.queue import DispositionQueue, Partition
from stream.analyst.truth import TruthFile
from stream.kafka.clients import OutgoingMessage, TrackedProducer, consumer_config, producer_config
from stream.kafka.errors import KafkaIOError
from stream.pipeline.health import Health
from stream.settings import Settings
from stream.simulate.truth import analyst_dispositions

log = logging.getLogger(__name__)

EXIT_FATAL = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REPORT_EVERY_S = 30.0


@dataclass
class DeskCounts:
    true_positives: int = 0
    false_positives: int = 0
    not_in_truth: int = 0
    invalid: int = 0
    ignored: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return self.true_positives + self.false_positives


class SimulatedAnalyst:
    def __init__(
        self,
        settings: Settings,
        truth: TruthFile,
        *,
        delay: timedelta,
        flush_after_s: float,
        group_id: str,
        health: Health | None = None,
    ) -> None:
        if delay < timedelta(0):
            raise ValueError("the review delay must not be negative")
        self._settings = settings
        self._truth = truth
        self._delay = delay
        self._flush_after_s = flush_after_s
        self._queue = DispositionQueue()
        self._seen_events: set[str] = set()
        self.counts = DeskCounts()
        self._stop = threading.Event()
        self._health = health
        self._consumer = Consumer(
            consumer_config(
                settings.kafka, group_id, overrides={"client.id": f"{settings.kafka.client_id}-"
                                                     f"analyst-{uuid.uuid4().hex[:6]}"},
            )
        )  # fmt: skip
        self._producer = TrackedProducer(producer_config(settings.kafka))

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Until :meth:`request_stop`; returns the exit code (0, or 2 on a fatal Kafka error)."""
        topic = self._settings.topics.alerts
        self._consumer.subscribe([topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info(
            "analyst desk: dispositions of %s to %s, %s after each event (event time); truth %s",
            topic, self._settings.topics.labels, self._delay, self._truth.path,
        )  # fmt: skip
        last_alert = time.monotonic()
        last_report = time.monotonic()
        try:
            if self._health is not None:
                self._health.set_ready("starting")
            while not self._stop.is_set():
                if self._health is not None:
                    self._health.beat()
                messages = self._consumer.consume(500, timeout=0.5)
                for message in messages:
                    self._read(message)
                if messages:
                    last_alert = time.monotonic()
                quiet = time.monotonic() - last_alert >= self._flush_after_s
                self._release(everything=quiet)
                if time.monotonic() - last_report >= _REPORT_EVERY_S:
                    self._report()
                    last_report = time.monotonic()
        except KafkaException as exc:
            log.critical("analyst desk cannot continue: %s", exc)
            return EXIT_FATAL
        finally:
            self._report()
            self._consumer.close()
        return 0

    def _read(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            return
        topic, number, offset = message.topic(), message.partition(), message.offset()
        if topic is None or number is None or offset is None:
            return  # librdkafka sets all three on every consumed message
        partition: Partition = (topic, number)
        try:
            alert = decode(Alert, message.value())
        except DecodeError as exc:
            # Not ours to dead-letter (the scorer wrote it); counted, skipped, committed past.
            self.counts.invalid += 1
            log.warning("not an alert at %s[%d]@%d: %s", *partition, offset, exc.reason)
            self._queue.seen(partition, offset, self._queue.clock or _EPOCH)
            return
        self._queue.seen(partition, offset, alert.event_time)
        if alert.mode != "live":
            self.counts.ignored[alert.mode] = self.counts.ignored.get(alert.mode, 0) + 1
            return
        event_id = alert.event.event_id
        if event_id in self._seen_events:
            return  # dispositioned already; the label id would be the same anyway
        record = self._truth.get(event_id)
        if record is None:
            self.counts.not_in_truth += 1
            log.warning("alert %s: event %s is not in %s", alert.alert_id, event_id,
                        self._truth.path)  # fmt: skip
            return
        (label,) = analyst_dispositions(
            [event_id], {event_id: record}, self._delay, alert_ids={event_id: alert.alert_id}
        )
        self._seen_events.add(event_id)
        self._queue.hold(label, partition, offset)

    def _release(self, *, everything: bool) -> None:
        labels = self._queue.due(everything=everything)
        if labels:
            topic = self._settings.topics.labels
            while True:
                for label in labels:
                    self._producer.produce(
                        OutgoingMessage(topic, encode(label), label.customer_id.encode())
                    )
                try:
                    self._producer.flush_or_raise(30.0)
                    break
                except KafkaIOError as exc:  # the broker away: produce them again
                    if self._stop.is_set():
                        return  # not committed: read again after a restart
                    log.warning("dispositions not delivered yet (%s); retrying", exc)
            self._queue.done()
            for label in labels:
                if label.is_suspicious:
                    self.counts.true_positives += 1
                else:
                    self.counts.false_positives += 1
        self._commit()

    def _commit(self) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._queue.committable()]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # e.g. during a rebalance: the next round commits
                log.debug("commit postponed: %s", exc)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for label in self._queue.forget({(p.topic, p.partition) for p in partitions}):
            self._seen_events.discard(label.event_id)

    def _report(self) -> None:
        c = self.counts
        log.info(
            "analyst desk: %d dispositions sent (%d true positives, %d false positives), "
            "%d held until their review time, %d alerts not in the truth, %d invalid",
            c.sent, c.true_positives, c.false_positives, len(self._queue), c.not_in_truth,
            c.invalid,
        )  # fmt: skip
