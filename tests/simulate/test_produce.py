"""Producing a simulation to the real broker: everything arrives, per-customer order holds,
labels arrive on their own topic once the simulated clock has passed their label time."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Message

from schemas import LabelEvent, TransactionEvent, decode
from stream.devenv import free_ports
from stream.settings import KafkaSettings, Settings
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import simulate
from stream.simulate.errors import DeliveryError
from stream.simulate.produce import produce
from stream.simulate.render import Renderer

# Short label delays, so most labels fall inside the run and must be interleaved.
CONFIG = SimulationConfig(
    customers=200,
    days=10,
    seed=21,
    prevalence=0.02,
    warmup_days=1,
    chargeback_delay_days=(0.5, 2.0),
    case_delay_days=(1.0, 3.0),
)


def _consume_all(
    kafka: KafkaSettings, group: str, topics: list[str], expected: int
) -> list[Message]:
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[Message] = []
    try:
        consumer.subscribe(topics)
        last = time.monotonic()
        while len(received) < expected and time.monotonic() - last < 30:
            for message in consumer.consume(num_messages=2000, timeout=0.5):
                assert message.error() is None, message.error()
                received.append(message)
                last = time.monotonic()
    finally:
        consumer.close()
    return received


@pytest.mark.integration
def test_events_and_labels_arrive_complete_ordered_and_interleaved(
    test_settings: Settings, group_id: str
) -> None:
    sim = simulate(CONFIG)
    renderer = Renderer(sim)
    expected_events = [line for line in renderer.events_json(0, len(sim.events))]
    report = produce(sim, test_settings, progress=False)
    assert (report.events, report.labels) == (len(sim.events), len(sim.labels))

    topics = test_settings.topics
    messages = _consume_all(
        test_settings.kafka,
        group_id,
        [topics.transactions, topics.labels],
        report.events + report.labels,
    )
    events = [m for m in messages if m.topic() == topics.transactions]
    labels = [m for m in messages if m.topic() == topics.labels]
    assert len(events) == len(sim.events)
    assert len(labels) == len(sim.labels)

    # Per customer, the events arrive exactly in the order of the stream, keyed by customer.
    sent: dict[str, list[bytes]] = defaultdict(list)
    for line in expected_events:
        sent[decode(TransactionEvent, line).customer_id].append(line)
    got: dict[str, list[bytes]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for message in sorted(events, key=lambda m: (m.partition(), m.offset())):
        event = decode(TransactionEvent, message.value())
        assert message.key() == event.customer_id.encode()
        got[event.customer_id].append(message.value())
        partitions[event.customer_id].add(message.partition())
    assert got == sent
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) == 3  # spread over the topic

    # A label is produced once the events being produced have passed its label time: it is
    # written after every event of earlier event time, and before any event of later time.
    event_times = {}
    for message in events:
        event = decode(TransactionEvent, message.value())
        event_times[event.event_id] = (event.event_time, message.timestamp()[1])
    interleaved = 0
    for message in labels:
        label = decode(LabelEvent, message.value())
        produced_at = message.timestamp()[1]
        before = [ts for t, ts in event_times.values() if t <= label.label_time]
        after = [ts for t, ts in event_times.values() if t > label.label_time]
        assert produced_at >= max(before)
        if after:
            interleaved += 1
            assert produced_at <= min(after)
    assert interleaved > len(labels) // 2


@pytest.mark.integration
def test_rate_paces_the_wall_clock(test_settings: Settings) -> None:
    sim = simulate(SimulationConfig(customers=50, days=4, seed=2, prevalence=0.0))
    rate = 2 * len(sim.events)  # half a second at the requested rate
    report = produce(sim, test_settings, rate=rate, progress=False)
    assert report.seconds >= 0.45
    assert report.events_per_second <= rate * 1.05


def test_undeliverable_messages_raise_instead_of_vanishing() -> None:
    (port,) = free_ports(1)  # nothing listens there
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"))
    sim = simulate(SimulationConfig(customers=50, days=1, seed=2, prevalence=0.0))
    with pytest.raises(DeliveryError) as caught:
        produce(
            sim,
            settings,
            progress=False,
            flush_timeout_s=10,
            config_overrides={"message.timeout.ms": 1_000, "log_level": 0},
        )
    assert caught.value.failed + caught.value.undelivered == len(sim.events)
