"""Streaming scorer throughput and latency, against the model's own limit, in one run.

    .venv/bin/python -m bench.bench_scorer                      # ~10 minutes on 2 cores
    .venv/bin/python -m bench.bench_scorer --quick               # smaller runs
    .venv/bin/python -m bench.bench_scorer --registry DIR        # a trained champion instead

Measured, all on the same machine in the same run, with the same model and batch size:

* ``model only``: ``LoadedModel.predict_batch`` on the run's own narratives at batch 256 - the
  reference every pipeline figure is divided by;
* ``pipeline``: the real scorer (``ScorerRunner`` from ``build_scorer``, in this process)
  consuming a pre-filled 6-partition topic: decode, Redis context, narratives, model, reasons
  for alerts, scored records, alert produce + flush, commit. Steady-state events/s between the
  first and the last commit;
* ``pipeline, batch 1``: the same with ``batch_max_size=1`` (scoring one event at a time);
* ``pipeline, exactly-once``: with Kafka transactions;
* ``pipeline, trivial model``: a model that returns constant scores - framework overhead only;
* ``latency``: events produced at half the measured pipeline maximum for a while; the time from
  each input's broker timestamp to its score message's broker timestamp (every score is
  emitted for this; alerts take the same path), p50 / p99, against the bound
  ``max_wait + 2 × one batch's model time`` (the mean per-batch model time of that run).

The model defaults to the CPU default architecture with untrained weights (speed does not depend
on weights) and thresholds calibrated to a 1% alert rate on this run's narratives, so alerts and
their reasons cost what they cost in production. ``--registry`` scores with a trained champion.
Broker and Redis: temporary ones from ``stream.devenv`` on free loopback ports.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.bench_model import machine
from bench.budget import CpuMeter, budget_table, stage_budget
from models.backbones import load_tokenizer
from models.inference import LoadedModel, Predictions, from_classifier, load_model
from models.registry import Registry, TrainingRecord
from models.settings import ModelSettings
from models.thresholds import calibrate
from models.train import build_model
from models.train_config import TrainConfig
from schemas import TransactionEvent, Typology, decode
from schemas.features import FEATURE_NAMES
from schemas.narrative import build_narrative, default_spec
from stream.context.store import ContextStore
from stream.devenv import (
    KafkaBroker,
    RedisServer,
    ensure_kafka_jars,
    ensure_redis_server_binary,
    ensure_topics,
    free_ports,
)
from stream.redis_client import connect
from stream.scorer.app import build_scorer, narrator_for
from stream.scorer.memory import freeze_startup_objects
from stream.settings import (
    ContextSettings,
    KafkaSettings,
    ScorerSettings,
    Settings,
    TopicSettings,
    load_settings,
)
from stream.simulate.config import build_config
from stream.simulate.engine import simulate
from stream.simulate.writers import write_files

BATCH = 256


@contextmanager
def infrastructure(workdir: Path) -> Iterator[tuple[KafkaBroker, RedisServer]]:
    libs = ensure_kafka_jars(load_settings().home)
    kafka_port, controller_port, redis_port = free_ports(3)
    with (
        KafkaBroker(
            workdir / "kafka", libs, port=kafka_port, controller_port=controller_port
        ) as broker,
        RedisServer(
            redis_port, workdir / "redis", binary=ensure_redis_server_binary()
        ) as redis_server,
    ):
        yield broker, redis_server


def event_lines(
    workdir: Path,
    customers: int,
    days: int,
    *,
    seed: int = 5,
    start_date: str = "2026-04-01",
    progress: bool = False,
) -> list[bytes]:
    """Simulated events as JSON lines (written under ``workdir/sim``), in time order."""
    out = workdir / "sim"
    config = build_config(customers=customers, days=days, seed=seed, start_date=start_date)
    write_files(simulate(config), out, progress=progress)
    return [line for line in (out / "events.jsonl").read_bytes().splitlines() if line]


def untrained_default_model(
    registry_root: Path, narratives: list[str], features: np.ndarray
) -> str:
    """The CPU default architecture, random weights, thresholds at a 1% alert rate."""
    config = TrainConfig()
    model = build_model(config, list(FEATURE_NAMES))
    model.eval()
    tokenizer = load_tokenizer()
    probe = from_classifier(model, tokenizer, calibrate(np.linspace(0, 1, 10), np.arange(10) > 7))
    scores = probe.predict_batch(narratives, features if probe.hybrid else None).scores
    thresholds = calibrate(scores, np.zeros(len(scores), dtype=bool), alert_rate=0.01)
    spec = orjson.loads(default_spec().to_json())
    registry = Registry(registry_root)
    version = registry.save(
        model=model,
        tokenizer=tokenizer,
        narrative_spec=spec,
        training=TrainingRecord(
            created_at=datetime.now(UTC),
            parent_version=None,
            narrative_version=str(spec.get("version", "default")),
            data_window={},
            seed=0,
            train_config=config.model_dump(mode="json"),
        ),
        metrics={},
        thresholds=thresholds,
        name="bench-untrained",
    )
    registry.promote(version, reason="benchmark")
    return version


@dataclass
class RunResult:
    events: int
    seconds: float
    events_per_s: float
    batches: int
    mean_model_s_per_batch: float
    stages: dict[str, dict[str, float]]
    """Microseconds per event of each step of a batch (bench.budget.stage_budget)."""
    process_cpu: dict[str, float]
    """Microseconds of CPU per event of the scorer process, the broker and redis-server."""


class TrivialModel:
    """Constant scores: what the pipeline costs when the model costs nothing."""

    def __init__(self, real: LoadedModel) -> None:
        # The real model's version: the champion watcher reloads the registry's champion
        # whenever the current version differs from it, which swapped the real model back in
        # part-way through earlier runs of this figure.
        self.version = real.version
        self.alert_threshold = 2.0  # never alerts: reasons would call a model
        self.hybrid = False
        self.feature_names = real.feature_names
        self.narrative_spec = real.narrative_spec
        self.narrative_version = real.narrative_version

    def predict_batch(self, narratives: list[str], features: Any = None) -> Predictions:
        n = len(narratives)
        probs = np.zeros((n, len(Typology)), np.float32)
        probs[:, 0] = 1.0
        return Predictions(np.zeros(n, np.float32), [Typology.CARD_TESTING] * n, probs)


def fresh_topics(kafka: KafkaSettings, prefix: str) -> TopicSettings:
    """New topics for one run (6 input partitions, as the scorer's tests and compose use),
    named ``<prefix><kind>-<random>``, created on the broker."""
    run = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        transactions=f"{prefix}tx-{run}",
        alerts=f"{prefix}alerts-{run}",
        dlq=f"{prefix}dlq-{run}",
        scores=f"{prefix}scores-{run}",
        alerts_shadow=f"{prefix}shadow-{run}",
        labels=f"{prefix}labels-{run}",
        models=f"{prefix}models-{run}",
    )
    ensure_topics(
        kafka,
        {
            topics.transactions: 6,
            topics.alerts: 3,
            topics.dlq: 1,
            topics.scores: 3,
            topics.models: 1,
        },
    )
    return topics


def run_pipeline(
    base: Settings,
    lines: list[bytes],
    *,
    batch_max_size: int,
    delivery: str = "at_least_once",
    trivial: bool = False,
    emit_scores: bool = False,
    servers: dict[str, int] | None = None,
) -> RunResult:
    """Fill a fresh topic, then time the scorer consuming all of it."""
    run = uuid.uuid4().hex[:8]  # names the run's group and namespace
    topics = fresh_topics(base.kafka, "")
    produce(base.kafka, topics.transactions, lines)
    settings = base.model_copy(
        update={
            "topics": topics,
            "context": ContextSettings(namespace=f"bench-{run}"),
            "scorer": ScorerSettings(
                group_id=f"bench-{run}",
                batch_max_size=batch_max_size,
                batch_max_wait_ms=50,
                delivery=delivery,
                emit_scores=emit_scores,
                metrics_port=0,
            ),
        }
    )
    app = build_scorer(settings, serve_metrics=False)
    if trivial:
        app.watcher.current = TrivialModel(app.watcher.current)  # type: ignore[assignment]
    runner = app.runner
    cpu = CpuMeter(dict(servers or {}))
    cpu.start()
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    total = len(lines)
    first_t = first_n = None
    last_t = last_n = 0.0
    # One consumer for the whole run, asked every 0.2 s: a new consumer per question (threads,
    # connections, a group coordinator lookup) cost this process - the scorer's own - CPU.
    watcher = Consumer({**settings.kafka.client_config(), "group.id": settings.scorer.group_id})
    try:
        while True:
            done = committed(watcher, topics.transactions)
            now = time.perf_counter()
            if first_t is None and done > 0:
                first_t, first_n = now, done
            if done >= total:
                last_t, last_n = now, done
                break
            if not thread.is_alive():
                raise RuntimeError("the scorer stopped early")
            time.sleep(0.2)
    finally:
        watcher.close()
        runner.request_stop()
        thread.join(timeout=60)
        app.close()
    if first_t is None or first_n is None:
        raise RuntimeError("nothing was committed")
    seconds = last_t - first_t
    samples = next(iter(runner.metrics.model_latency.collect())).samples
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total_s = next(s.value for s in samples if s.name.endswith("_sum"))
    return RunResult(
        events=int(last_n - first_n),
        seconds=seconds,
        events_per_s=(last_n - first_n) / seconds if seconds > 0 else float("nan"),
        batches=int(count),
        mean_model_s_per_batch=total_s / max(count, 1),
        stages=stage_budget(runner.metrics, total),
        process_cpu=cpu.per_event(total),
    )


def produce(
    kafka: KafkaSettings, topic: str, lines: list[bytes], rate: float | None = None
) -> None:
    producer = Producer({**kafka.client_config(), "linger.ms": 5, "enable.idempotence": True})
    # Connected and the topic's leaders known before the first event: the broker timestamp
    # is the producer's create time, so a cold producer's first events would carry the
    # producer's own start-up (metadata, idempotent PID) as scorer latency.
    producer.list_topics(topic, timeout=30)
    started = time.perf_counter()
    for i, line in enumerate(lines):
        if rate is not None:
            wait = started + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        key = orjson.loads(line)["customer_id"].encode()
        while True:
            try:
                producer.produce(topic, value=line, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("input not fully produced")


def committed(consumer: Consumer, topic: str) -> int:
    """Offsets committed by the consumer's group on the topic's 6 partitions, summed."""
    partitions = [TopicPartition(topic, p) for p in range(6)]
    offsets = consumer.committed(partitions, timeout=10)
    return sum(max(tp.offset, 0) for tp in offsets)


def latency_run(base: Settings, lines: list[bytes], rate: float) -> dict[str, Any]:
    """Produce at `rate` while the scorer runs; input broker ts -> score message broker ts."""
    run = uuid.uuid4().hex[:8]  # names the run's group and namespace
    topics = fresh_topics(base.kafka, "l")
    settings = base.model_copy(
        update={
            "topics": topics,
            "context": ContextSettings(namespace=f"lat-{run}"),
            "scorer": ScorerSettings(
                group_id=f"lat-{run}",
                batch_max_size=BATCH,
                batch_max_wait_ms=50,
                emit_scores=True,
                metrics_port=0,
            ),
        }
    )
    app = build_scorer(settings, serve_metrics=False)
    freeze_startup_objects()  # as `riskstream run scorer` does before it starts
    # Garbage-collection pauses in this process (the scorer's) during the run: a suspect for
    # the latency tail, measured rather than guessed.
    gc_pauses_ms: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses_ms.append((time.perf_counter() - gc_started[0]) * 1000)

    gc.callbacks.append(on_gc)
    thread = threading.Thread(target=app.runner.run, daemon=True)
    thread.start()
    time.sleep(3)  # join the group before traffic starts
    # Paced traffic comes from a process of its own, as it would in production: a pacing loop
    # in this process (one wake-up per event) competed with the scorer's threads for the GIL.
    feeder = multiprocessing.get_context("spawn").Process(
        target=produce, args=(settings.kafka, topics.transactions, lines, rate)
    )
    feeder.start()
    feeder.join()
    if feeder.exitcode != 0:
        raise RuntimeError(f"the paced producer failed (exit {feeder.exitcode})")
    series = read_latencies(settings, topics, len(lines))
    latencies_ms = [float(latency) for _, latency in series]
    # p50 / max latency per second of the run, to see when the tail happens
    by_second: dict[int, list[float]] = {}
    for input_ms, latency in series:
        by_second.setdefault((input_ms - series[0][0]) // 1000, []).append(float(latency))
    per_second = [
        [second, float(np.percentile(values, 50)), float(max(values))]
        for second, values in sorted(by_second.items())
    ]
    app.runner.request_stop()
    thread.join(timeout=60)
    gc.callbacks.remove(on_gc)
    samples = next(iter(app.runner.metrics.model_latency.collect())).samples
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total_s = next(s.value for s in samples if s.name.endswith("_sum"))
    app.close()
    gc.unfreeze()  # as the CLI does at exit (frozen objects are never freed otherwise)
    batch_sizes = next(iter(app.runner.metrics.batch_size.collect())).samples
    n_batches = next(s.value for s in batch_sizes if s.name.endswith("_count"))
    sum_sizes = next(s.value for s in batch_sizes if s.name.endswith("_sum"))
    model_ms = 1000 * total_s / max(count, 1)
    return {
        "rate": rate,
        "p50_ms": float(np.percentile(latencies_ms, 50)),
        "p99_ms": float(np.percentile(latencies_ms, 99)),
        "p90_ms": float(np.percentile(latencies_ms, 90)),
        "max_ms": float(np.max(latencies_ms)),
        "share_over_300ms": float(np.mean(np.asarray(latencies_ms) > 300)),
        # the last three quarters of the run: without the group's start-up (assignment, the
        # first batches' warm-up), which can hold the first events for a while
        "p99_ms_steady": float(np.percentile(latencies_ms[len(latencies_ms) // 4 :], 99)),
        "p99_ms_first_quarter": float(np.percentile(latencies_ms[: len(latencies_ms) // 4], 99)),
        "gc_pauses": len(gc_pauses_ms),
        "gc_pause_total_ms": float(sum(gc_pauses_ms)),
        "gc_pause_max_ms": float(max(gc_pauses_ms, default=0.0)),
        "per_second_p50_max_ms": per_second,
        "mean_batch": sum_sizes / max(n_batches, 1),
        "model_ms_per_batch": model_ms,
        "bound_ms": 50 + 2 * model_ms,
    }


def read_latencies(
    settings: Settings, topics: TopicSettings, expected: int
) -> list[tuple[int, int]]:
    """Input broker timestamps from the input topic, output ones from the scores topic: each
    event's (input timestamp, latency) in ms, in the order the events arrived."""

    def read(topic: str, key_of: Any) -> dict[str, int]:
        consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": f"r-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        seen: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while len(seen) < expected and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is None:
                    seen.setdefault(key_of(m.value()), m.timestamp()[1])
        consumer.close()
        return seen

    inputs = read(topics.transactions, lambda v: orjson.loads(v)["event_id"])
    outputs = read(topics.scores, lambda v: orjson.loads(v)["event_id"])
    return sorted((inputs[k], outputs[k] - inputs[k]) for k in outputs if k in inputs)


def model_only(
    model: LoadedModel, narratives: list[str], features: np.ndarray, batch: int, seconds: float
) -> float:
    model.predict_batch(narratives[:batch], features[:batch])
    done, i, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = slice(i, i + batch)
        if i + batch > len(narratives):
            i, chunk = 0, slice(0, batch)
        model.predict_batch(narratives[chunk], features[chunk])
        done += batch
        i += batch
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--registry", type=Path, help="score with this registry's champion")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only",
        help="comma-separated runs to do (pipeline, pipeline_exactly_once, "
        "pipeline_trivial_model, pipeline_batch_1, latency); default: all",
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="torch's threads for the model, in model-only and the pipelines (default: cores)",
    )
    args = parser.parse_args()
    customers, days = (600, 10) if args.quick else (1500, 14)

    with tempfile.TemporaryDirectory(prefix="bench-scorer-") as tmp:
        work = Path(tmp)
        lines = event_lines(work, customers, days)
        print(f"machine: {machine()}; events: {len(lines)}", flush=True)
        with infrastructure(work) as (broker, redis_server):
            # Narratives of this run's events (the same code the scorer runs), for model-only.
            events = [decode(TransactionEvent, line) for line in lines]
            store = ContextStore(
                connect(redis_server.redis_settings()),
                ContextSettings(namespace="probe"),
                create_namespace=True,
            )
            contexts = store.update_batch(events[:8192])
            registry_root = args.registry or work / "registry"
            if args.registry is None:
                spec = default_spec()
                probe = [
                    build_narrative(e, c.features, spec, c.story)
                    for e, c in zip(events, contexts, strict=False)
                ]
                untrained_default_model(
                    registry_root,
                    [n.text for n in probe],
                    np.asarray([n.features for n in probe], np.float32),
                )
            model_settings = ModelSettings(registry_dir=registry_root, cpu_threads=args.cpu_threads)
            model = load_model(model_settings, batch_size=BATCH)
            narrate = narrator_for(model)
            built = [narrate(e, c) for e, c in zip(events, contexts, strict=False)]
            texts = [n.text for n in built]
            features = np.asarray([n.features for n in built], np.float32)
            store.drop_namespace()

            base = Settings(
                kafka=broker.kafka_settings(),
                redis=redis_server.redis_settings(),
                model=model_settings,
            )
            results: dict[str, Any] = {
                "machine": machine(),
                "events": len(lines),
                "model": model.version,
                "torch_threads": torch.get_num_threads(),
            }
            window = 5.0 if args.quick else 10.0
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            reference = max(model_only(model, texts, features, BATCH, window / 2) for _ in range(2))
            # CPU of this process per narrative while only the model runs (torch's threads):
            # what the pipeline's other work has to share the cores with.
            cpu_s = time.process_time() - cpu_before
            results["model_only_cpu_us_per_narrative"] = (
                cpu_s / ((time.perf_counter() - wall_before) * reference) * 1e6
            )
            results["model_only_per_s"] = reference
            print(f"model only, batch {BATCH}: {reference:,.0f} narratives/s", flush=True)
            # The model's own batching gain: what micro-batching can give at most, before any
            # per-batch cost of the pipeline (poll, flush, commit) is shared out.
            started = time.perf_counter()
            model.tokenizer(texts[:4096], truncation=True, max_length=model.config.max_length)
            tokenise_us = (time.perf_counter() - started) / min(len(texts), 4096) * 1e6
            results["tokenise_us_per_event"] = tokenise_us  # inside the model step
            print(f"tokenising: {tokenise_us:.1f} µs per narrative", flush=True)
            single = model_only(model, texts, features, 1, window / 2)
            results["model_only_batch_1_per_s"] = single
            print(f"model only, batch 1: {single:,.0f} narratives/s", flush=True)
            runs: list[tuple[str, dict[str, Any], list[bytes]]] = [
                ("pipeline", {"batch_max_size": BATCH}, lines),
                (
                    "pipeline_exactly_once",
                    {"batch_max_size": BATCH, "delivery": "exactly_once"},
                    lines,
                ),
                ("pipeline_trivial_model", {"batch_max_size": BATCH, "trivial": True}, lines),
                ("pipeline_batch_1", {"batch_max_size": 1}, lines[: min(len(lines), 3000)]),
            ]
            wanted = set(args.only.split(",")) if args.only else None
            runs = [run for run in runs if wanted is None or run[0] in wanted]
            servers = {"broker": broker.pid or 0, "redis-server": redis_server.pid or 0}
            for name, kwargs, subset in runs:
                result = run_pipeline(base, subset, servers=servers, **kwargs)
                results[name] = result.__dict__
                print(
                    f"{name}: {result.events_per_s:,.0f} events/s "
                    f"({result.events} events in {result.seconds:.1f}s, {result.batches} batches, "
                    f"{result.mean_model_s_per_batch * 1000:.1f} ms model/batch)",
                    flush=True,
                )
            # The model reference again, after the pipelines: the machine may have changed pace.
            reference_after = max(
                model_only(model, texts, features, BATCH, window / 2) for _ in range(2)
            )
            results["model_only_after_per_s"] = reference_after
            if wanted is None or "latency" in wanted:
                pipeline_rate = results["pipeline"]["events_per_s"]
                half = pipeline_rate / 2
                latency_lines = lines[: int(min(len(lines), half * (20 if args.quick else 40)))]
                results["latency"] = latency_run(base, latency_lines, half)
                print(f"latency at {half:,.0f} events/s: {results['latency']}", flush=True)

    ref = statistics.mean([results["model_only_per_s"], results["model_only_after_per_s"]])
    print("\n| figure | events/s | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| model only, batch {BATCH} (reference, mean of before/after) | {ref:,.0f} | 1.00 |")
    for name in ("pipeline", "pipeline_exactly_once", "pipeline_trivial_model"):
        if name in results:
            rate = results[name]["events_per_s"]
            print(f"| {name} | {rate:,.0f} | {rate / ref:.2f} |")
    if "pipeline_batch_1" in results and "pipeline" in results:
        b1 = results["pipeline_batch_1"]["events_per_s"]
        print(
            f"| pipeline_batch_1 | {b1:,.0f} | "
            f"batching gain {results['pipeline']['events_per_s'] / b1:.1f}x |"
        )
    m1 = results["model_only_batch_1_per_s"]
    print(f"| model only, batch 1 | {m1:,.0f} | model's own gain {reference / m1:.1f}x |")
    print("\nper-event budget by step (µs per event; the model step's CPU is its calling thread)")
    budgeted = [n for n in ("pipeline", "pipeline_trivial_model") if n in results]
    print("\n".join(budget_table({n: results[n] for n in budgeted})))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
