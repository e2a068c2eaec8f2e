"""Simulator throughput: events per second generated to files, and produced to a local broker.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m bench.bench_simulate
    .venv/bin/python -m bench.bench_simulate --quick          # smaller runs
    .venv/bin/python -m bench.bench_simulate --no-kafka       # files only

Figures (targets: >= 50,000 events/s to files on one core, >= 20,000 events/s to the broker):

* ``files``: ``simulate()`` plus ``write_files(fmt="jsonl")`` end to end -- population,
  background, scenarios, sorting, labels, and writing events.jsonl, truth.jsonl (one row per
  event) and labels.jsonl with their sha256. Also reported: the same with Parquet added.
* ``kafka``: ``produce()`` of an already simulated run -- rendering, producing every event and
  label with delivery reports checked, and the final flush.

Absolute speeds drift on shared machines, so each figure comes with a reference measured in
the same run and the ratio to it: for files, a bare loop of ``orjson.dumps`` of one fixed event
dict plus a file write, as many events as the simulation made; for Kafka, the raw confluent
producer sending fixed bytes of the same average size, keyed, with the same producer settings.
Measurement and reference alternate ``--repeat`` times; the best of each is reported (the
least disturbed by other jobs) with the median alongside.

The Kafka part uses the broker named by the settings (``riskstream dev up``) if one answers,
otherwise it starts a temporary one with ``stream.devenv`` (allowed on every core, so that a
``taskset``-pinned benchmark does not pin the broker onto the producer's core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bench.machine import machine
from stream.settings import KafkaSettings, Settings, TopicSettings, load_settings
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import simulate
from stream.simulate.produce import produce, producer_config
from stream.simulate.writers import write_files

FIXED_EVENT = {
    "schema_version": 1,
    "event_id": "ev-0123abcd-000000001",
    "event_time": "2025-03-01T12:34:56.789Z",
    "customer_id": "cus-0000762",
    "account_id": "acc-0000762",
    "customer_segment": "retail",
    "channel": "card",
    "direction": "outbound",
    "amount_minor": 2194,
    "currency": "USD",
    "counterparty_id": "mer-0000563",
    "counterparty_type": "merchant",
    "terminal_id": "trm-0000563-1",
    "mcc": "5411",
    "country": "US",
}


def reference_file_rate(count: int, directory: Path) -> float:
    """Events/s of the simplest possible writer: dump one fixed dict, write it, repeat (in
    blocks of 2,000 lines, the size the simulator writes in)."""
    started = time.perf_counter()
    with (directory / "reference.jsonl").open("wb") as file:
        for start in range(0, count, 2_000):
            lines = [orjson.dumps(FIXED_EVENT) for _ in range(min(2_000, count - start))]
            file.write(b"\n".join(lines) + b"\n")
    return count / (time.perf_counter() - started)


def _summary(rates: list[float]) -> dict[str, float]:
    return {"best": round(max(rates)), "median": round(statistics.median(rates))}


def bench_files(config: SimulationConfig, directory: Path, repeat: int) -> dict[str, Any]:
    rates, references, generate_s, events = [], [], [], 0
    for attempt in range(repeat):
        started = time.perf_counter()
        sim = simulate(config)
        generated = time.perf_counter()
        write_files(sim, directory / f"jsonl-{attempt}", fmt="jsonl", progress=False)
        finished = time.perf_counter()
        events = len(sim.events)
        del sim
        rates.append(events / (finished - started))
        generate_s.append(generated - started)
        references.append(reference_file_rate(events, directory))

    both_started = time.perf_counter()
    write_files(simulate(config), directory / "both", fmt="both", progress=False)
    both = time.perf_counter() - both_started
    return {
        "customers": config.customers,
        "days": config.days,
        "events": events,
        "repeats": repeat,
        "events_per_s": _summary(rates),
        "generate_seconds_best": round(min(generate_s), 2),
        "events_per_s_jsonl_and_parquet_once": round(events / both),
        "reference_orjson_write_per_s": _summary(references),
        "ratio_to_reference_best": round(max(rates) / max(references), 3),
    }


def broker_answers(kafka: KafkaSettings) -> bool:
    try:
        AdminClient({**kafka.client_config(), "log_level": 0}).list_topics(timeout=3)
    except Exception:  # noqa: BLE001 (any failure means: no usable broker there)
        return False
    return True


@contextmanager
def a_broker(settings: Settings) -> Iterator[tuple[KafkaSettings, str]]:
    """The configured broker if it answers, else a temporary one; and which it was."""
    if broker_answers(settings.kafka):
        yield settings.kafka, "existing"
        return
    from stream.devenv import KafkaBroker, ensure_kafka_jars, free_ports

    pinned = os.sched_getaffinity(0)
    port, controller = free_ports(2)
    with tempfile.TemporaryDirectory() as home:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))  # the broker inherits this
        try:
            broker = KafkaBroker(
                Path(home) / "kafka",
                ensure_kafka_jars(settings.home.resolve()),
                port=port,
                controller_port=controller,
            )
            broker.start()
        finally:
            os.sched_setaffinity(0, pinned)
        try:
            yield broker.kafka_settings(), "temporary (stream.devenv)"
        finally:
            broker.stop()


def reference_kafka_rate(settings: Settings, count: int, size: int) -> float:
    """Messages/s of the raw producer: fixed bytes, one key per "customer", same settings."""
    value = b"x" * size
    keys = [f"cus-{i:07d}" for i in range(5_000)]
    failures = 0

    def on_delivery(error: object, _message: object) -> None:
        nonlocal failures
        failures += error is not None

    producer = Producer({**producer_config(settings), "on_delivery": on_delivery})
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(settings.topics.transactions, value, keys[i % len(keys)])
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    undelivered = producer.flush(120)
    if failures or undelivered:
        raise RuntimeError(f"reference production lost messages: {failures} + {undelivered}")
    return count / (time.perf_counter() - started)


def bench_kafka(config: SimulationConfig, partitions: int, repeat: int) -> dict[str, Any]:
    from stream.kafka.topics import ensure_topics

    base = load_settings()
    sim = simulate(config)
    sample = _sample_lines(sim)
    avg_size = sum(map(len, sample)) // max(1, len(sample))
    rates: list[float] = []
    references: list[float] = []
    created: list[str] = []
    with a_broker(base) as (kafka, which):
        for _ in range(repeat):
            suffix = uuid.uuid4().hex[:8]
            topics = TopicSettings(
                transactions=f"bench-sim-transactions-{suffix}",
                labels=f"bench-sim-labels-{suffix}",
            )
            reference_topics = TopicSettings(transactions=f"bench-sim-reference-{suffix}")
            layout = {
                topics.transactions: partitions,
                topics.labels: 1,
                reference_topics.transactions: partitions,
            }
            ensure_topics(kafka, layout)
            created += list(layout)
            settings = base.model_copy(update={"kafka": kafka, "topics": topics})
            report = produce(sim, settings, progress=False)
            rates.append(report.events_per_second)
            reference_settings = base.model_copy(
                update={"kafka": kafka, "topics": reference_topics}
            )
            references.append(reference_kafka_rate(reference_settings, report.events, avg_size))
        admin = AdminClient(kafka.client_config())
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)
    return {
        "customers": config.customers,
        "days": config.days,
        "partitions": partitions,
        "broker": which,
        "events": len(sim.events),
        "labels": len(sim.labels),
        "repeats": repeat,
        "events_per_s": _summary(rates),
        "reference_raw_producer_per_s": _summary(references),
        "ratio_to_reference_best": round(max(rates) / max(references), 3),
        "avg_event_bytes": avg_size,
    }


def _sample_lines(sim: Any) -> list[bytes]:
    from stream.simulate.render import Renderer

    return Renderer(sim).events_json(0, min(1000, len(sim.events)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (~1/4 of the events)")
    parser.add_argument("--no-kafka", action="store_true", help="skip the broker figure")
    parser.add_argument("--customers", type=int, default=10_000, help="for the files figure")
    parser.add_argument("--kafka-customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="alternations per figure")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    scale = 4 if args.quick else 1

    results: dict[str, Any] = {"machine": machine(affinity=sorted(os.sched_getaffinity(0)))}
    with tempfile.TemporaryDirectory() as directory:
        files_config = SimulationConfig(customers=args.customers // scale, days=args.days, seed=1)
        results["files"] = bench_files(files_config, Path(directory), args.repeat)
        print(json.dumps({"files": results["files"]}, indent=2), flush=True)
    if not args.no_kafka:
        kafka_config = SimulationConfig(
            customers=args.kafka_customers // scale, days=args.days, seed=2
        )
        results["kafka"] = bench_kafka(kafka_config, args.partitions, args.repeat)
        print(json.dumps({"kafka": results["kafka"]}, indent=2), flush=True)
    results["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
