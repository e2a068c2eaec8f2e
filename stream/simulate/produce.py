"""Produce a simulation to Kafka: events to ``topics.transactions``, labels to ``topics.labels``.

* Events are keyed by customer id and produced in event-time order by one idempotent producer,
  so every customer's events reach their partition in order (idempotence keeps the order even
  across retries).
* Labels are interleaved: a label is produced as soon as the simulated clock (the event time
  of the events being produced) passes its ``label_time``, so "the chargeback arrives 30 days
  later" means 30 simulated days of traffic later. Labels due after the last event follow at
  the end, in label-time order.
* ``rate`` paces the wall clock (events per second); without it, as fast as possible.
* Every message's delivery report is checked; failures and messages still undelivered after the
  final flush raise :class:`DeliveryError` with the counts: no silent loss.

Messages keep the producer's own timestamp, not the simulated event time: a topic's time-based
retention would otherwise delete months-old "simulated" data as soon as it arrived.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer
from tqdm import tqdm

from stream.settings import Settings
from stream.simulate.engine import Simulation
from stream.simulate.errors import DeliveryError
from stream.simulate.render import JSON_CHUNK, Renderer, gc_paused

log = logging.getLogger(__name__)

POLL_EVERY = 1_000


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings: the shared connection config plus batching for bulk production."""
    config = settings.kafka.client_config()
    config.update(
        {
            "client.id": f"{settings.kafka.client_id}-simulate",
            "enable.idempotence": True,  # implies acks=all; keeps per-partition order on retry
            "linger.ms": 20,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            # The Java client's partitioner, so a key lands where Java/aiokafka producers
            # would put it too (librdkafka's default hashes keys differently).
            "partitioner": "murmur2_random",
        }
    )
    config.update(overrides)
    return config


@dataclass
class ProduceReport:
    events: int
    labels: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


class _Deliveries:
    """Counts delivery reports; remembers the first error to put in the exception."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{error} (topic {message.topic()})"


def produce(
    sim: Simulation,
    settings: Settings,
    *,
    rate: float | None = None,
    progress: bool = True,
    flush_timeout_s: float = 120.0,
    config_overrides: dict[str, Any] | None = None,
) -> ProduceReport:
    """Produce all events and labels; returns counts once every message is acknowledged."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive (events per second)")
    deliveries = _Deliveries()
    producer = Producer(
        {**producer_config(settings, **(config_overrides or {})), "on_delivery": deliveries}
    )
    events_topic, labels_topic = settings.topics.transactions, settings.topics.labels
    renderer = Renderer(sim)
    n_events, n_labels = len(sim.events), len(sim.labels)
    t_ms = sim.events["t_ms"]
    label_ms = sim.labels.label_ms

    def send(topic: str, value: bytes, key: str) -> None:
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:  # local queue full: let librdkafka drain it, then retry
                producer.poll(0.05)

    with gc_paused():
        # Kept until their time comes: copy each into an object of its own size, since
        # orjson's result holds a buffer of ~4 KiB (see render.JSON_CHUNK).
        labels = [bytes(memoryview(line)) for line in renderer.labels_json(0, n_labels)]
        label_keys = renderer.customer_ids[sim.events["cust"][sim.labels.rows]].tolist()
    next_label, sent = 0, 0
    started = time.perf_counter()
    seconds_per_event = 1 / rate if rate else 0.0
    pace_every = max(1, int(rate / 100)) if rate else 0
    with (
        gc_paused(),
        tqdm(
            total=n_events, unit="ev", unit_scale=True, desc="producing", disable=not progress
        ) as bar,
    ):
        for lo in range(0, n_events, JSON_CHUNK):
            hi = min(n_events, lo + JSON_CHUNK)
            lines = renderer.events_json(lo, hi)
            keys = renderer.customer_ids[sim.events["cust"][lo:hi]].tolist()
            # labels_known[i]: how many labels have become known by the time of event lo + i
            labels_known = np.searchsorted(label_ms, t_ms[lo:hi], side="right").tolist()
            for line, key, labels_due in zip(lines, keys, labels_known, strict=True):
                while next_label < labels_due:
                    send(labels_topic, labels[next_label], label_keys[next_label])
                    next_label += 1
                send(events_topic, line, key)
                sent += 1
                if sent % POLL_EVERY == 0:
                    producer.poll(0)
                if pace_every and sent % pace_every == 0:
                    send_at = started + sent * seconds_per_event
                    # poll() returns early when it serves a delivery report: loop until then.
                    while (ahead := send_at - time.perf_counter()) > 0:
                        producer.poll(ahead)
            bar.update(hi - lo)
        while next_label < n_labels:  # labels known only after the simulated period
            send(labels_topic, labels[next_label], label_keys[next_label])
            next_label += 1
        undelivered = producer.flush(flush_timeout_s)
    elapsed = time.perf_counter() - started
    if deliveries.failed or undelivered:
        raise DeliveryError(
            f"{deliveries.failed} message(s) failed and {undelivered} were still undelivered "
            f"after {flush_timeout_s:.0f} s; first error: {deliveries.first_error}",
            failed=deliveries.failed,
            undelivered=undelivered,
        )
    log.info(
        "produced %d events to %s and %d labels to %s in %.1f s",
        n_events,
        events_topic,
        n_labels,
        labels_topic,
        elapsed,
    )
    return ProduceReport(events=n_events, labels=n_labels, seconds=elapsed)
