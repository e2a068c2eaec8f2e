"""Soak: a scorer process at half its maximum throughput for a long time (not run in CI).

    .venv/bin/python -m bench.bench_soak --registry DIR                  # 30 minutes
    .venv/bin/python -m bench.bench_soak --registry DIR --minutes 10     # shorter

Steps, in one run on the same machine:

1. a temporary broker and Redis (``stream.devenv``, loopback, free ports) and simulated traffic
   written to a file (enough for the whole run);
2. **maximum**: a backlog is produced, a ``riskstream run scorer`` process started, and its
   steady rate read off ``riskstream_events_scored_total`` between 20 % and 100 % of the
   backlog - the reference the soak rate is derived from;
3. **soak**: events produced at half that rate for ``--minutes``, to the same scorer, while
   every 10 s the scorer's resident memory (VmRSS in /proc/<pid>/status) and the group's lag
   (end offsets minus committed offsets, read from the broker) are sampled.

Reported: RSS growth = median of the last 5 minutes over the median of the first 5 minutes
after a 2-minute warm-up (windows shrink for short runs); the lag's least-squares slope after
warm-up, and the lag growth it implies over the run, compared with 10 s of traffic. Samples
and summary go to ``--json``; RELIABILITY.md records the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from tqdm import tqdm

from bench.bench_model import machine
from bench.bench_scorer import event_lines
from models.settings import ModelSettings
from stream.devenv import (
    KafkaBroker,
    RedisServer,
    ensure_kafka_jars,
    ensure_redis_server_binary,
    ensure_topics,
    free_ports,
)
from stream.settings import (
    ContextSettings,
    KafkaSettings,
    ScorerSettings,
    Settings,
    TopicSettings,
    load_settings,
    to_env,
)

SAMPLE_EVERY_S = 10.0
PARTITIONS = 6


def settings_for(broker: KafkaBroker, redis: RedisServer, registry: Path, home: Path) -> Settings:
    topics = TopicSettings(
        transactions="soak-tx",
        dlq="soak-dlq",
        alerts="soak-alerts",
        alerts_shadow="soak-alerts-shadow",
        scores="soak-scores",
        labels="soak-labels",
        models="soak-models",
    )
    counts = {name: 1 for name in topics.model_dump().values()}
    counts[topics.transactions] = PARTITIONS
    ensure_topics(broker.kafka_settings(), counts)
    (metrics_port,) = free_ports(1)
    return Settings(
        home=home,
        kafka=broker.kafka_settings(),
        redis=redis.redis_settings(),
        topics=topics,
        context=ContextSettings(namespace="soak"),
        model=ModelSettings(registry_dir=registry),
        scorer=ScorerSettings(group_id="soak-scorer", metrics_port=metrics_port),
    )


class Scorer:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        env = {**os.environ, **to_env(settings), "HF_HUB_OFFLINE": "1"}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "scorer"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def scored(self) -> float:
        url = f"http://127.0.0.1:{self.settings.scorer.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("riskstream_events_scored_total{")
        )

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=120)


def producer(kafka: KafkaSettings) -> Producer:
    return Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 5})


def key_of(line: bytes) -> bytes:
    return str(orjson.loads(line)["customer_id"]).encode()


def produce_one(out: Producer, topic: str, line: bytes) -> None:
    """Produce, waiting for room while the local queue is full."""
    while True:
        try:
            out.produce(topic, line, key_of(line))
            return
        except BufferError:
            out.poll(0.1)


def produce_all(kafka: KafkaSettings, topic: str, lines: list[bytes]) -> None:
    out = producer(kafka)
    for line in lines:
        produce_one(out, topic, line)
        out.poll(0)
    if out.flush(120) != 0:
        raise RuntimeError("backlog not acknowledged")


def group_lag(kafka: KafkaSettings, group: str, topic: str) -> int:
    """End offsets minus the group's committed offsets, summed over the partitions."""
    consumer = Consumer({**kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = consumer.committed(partitions, timeout=10)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def measure_max(scorer: Scorer, backlog: int, timeout_s: float = 1800) -> float:
    """Steady events/s while the scorer works through a backlog (20 % .. 100 % of it)."""
    start_at, end_at = 0.2 * backlog, 0.98 * backlog
    started: tuple[float, float] | None = None
    deadline = time.monotonic() + timeout_s
    with tqdm(total=backlog, desc="maximum (backlog)", unit="ev") as bar:
        while time.monotonic() < deadline:
            if scorer.process.poll() is not None:
                raise RuntimeError(f"scorer exited; see {scorer.log_path}")
            scored = scorer.scored()
            bar.update(int(scored) - bar.n)
            now = time.monotonic()
            if started is None and scored >= start_at:
                started = (now, scored)
            if started is not None and scored >= end_at:
                return (scored - started[1]) / (now - started[0])
            time.sleep(0.5)
    raise RuntimeError("the backlog was not scored in time")


@dataclass
class Sample:
    t_s: float
    rss_kib: int
    lag: int
    scored: float
    produced: int


def soak(
    scorer: Scorer, lines: list[bytes], rate: float, seconds: float, settings: Settings
) -> list[Sample]:
    kafka, topic = settings.kafka, settings.topics.transactions
    out = producer(kafka)
    produced = 0
    stop = threading.Event()

    def feed() -> None:
        nonlocal produced
        begun = time.monotonic()
        for index, line in enumerate(lines):
            if stop.is_set():
                break
            delay = begun + index / rate - time.monotonic()
            if delay > 0:
                out.poll(delay)
            produce_one(out, topic, line)
            produced = index + 1
        out.flush(60)

    thread = threading.Thread(target=feed, daemon=True)
    samples: list[Sample] = []
    begun = time.monotonic()
    thread.start()
    try:
        with tqdm(total=int(seconds), desc=f"soak at {rate:.0f} ev/s", unit="s") as bar:
            while (elapsed := time.monotonic() - begun) < seconds:
                if scorer.process.poll() is not None:
                    raise RuntimeError(f"scorer exited during the soak; see {scorer.log_path}")
                samples.append(
                    Sample(
                        t_s=round(elapsed, 1),
                        rss_kib=scorer.rss_kib(),
                        lag=group_lag(kafka, settings.scorer.group_id, topic),
                        scored=scorer.scored(),
                        produced=produced,
                    )
                )
                bar.update(int(elapsed) - bar.n)
                bar.set_postfix(rss_mib=samples[-1].rss_kib // 1024, lag=samples[-1].lag)
                time.sleep(max(0.0, begun + len(samples) * SAMPLE_EVERY_S - time.monotonic()))
    finally:
        stop.set()
        thread.join(90)
    return samples


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    numerator = sum((t - mean_t) * (v - mean_v) for t, v in points)
    denominator = sum((t - mean_t) ** 2 for t, _ in points) or 1.0
    return numerator / denominator * 60


def summarise(samples: list[Sample], seconds: float, rate: float) -> dict[str, Any]:
    warm_up_s = min(120.0, seconds / 6)
    window_s = min(300.0, (seconds - warm_up_s) / 4)
    after = [s for s in samples if s.t_s >= warm_up_s]
    first = [s.rss_kib for s in after if s.t_s < warm_up_s + window_s]
    last = [s.rss_kib for s in after if s.t_s >= seconds - window_s]
    rss_first, rss_last = statistics.median(first), statistics.median(last)
    slope = slope_per_minute([(s.t_s, float(s.lag)) for s in after])
    span_min = (after[-1].t_s - after[0].t_s) / 60
    return {
        "warm_up_s": warm_up_s,
        "window_s": window_s,
        "rss_first_window_mib": round(rss_first / 1024, 1),
        "rss_last_window_mib": round(rss_last / 1024, 1),
        "rss_growth_percent": round((rss_last / rss_first - 1) * 100, 2),
        "rss_max_mib": round(max(s.rss_kib for s in after) / 1024, 1),
        "lag_mean": round(statistics.fmean(s.lag for s in after), 1),
        "lag_max": max(s.lag for s in after),
        "lag_slope_per_min": round(slope, 2),
        "lag_growth_over_run": round(slope * span_min, 1),
        "ten_seconds_of_traffic": round(rate * 10),
        "events_scored_during_soak": int(samples[-1].scored - samples[0].scored),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--registry", type=Path, help="registry with a champion (default: settings)"
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length")
    parser.add_argument("--backlog", type=int, default=6000, help="events for the maximum")
    parser.add_argument("--share", type=float, default=0.5, help="soak rate / maximum rate")
    parser.add_argument("--customers", type=int, default=10_000)
    # 30 days of 10,000 customers (~840,000 events) last 30 minutes at ~460 events/s.
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--json", type=Path, help="write samples and summary here")
    args = parser.parse_args()
    registry = (args.registry or load_settings().model.registry_dir).resolve()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    info = {**machine(), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = Path(tmp)
        lines = event_lines(
            workdir, args.customers, args.days, seed=31, start_date="2026-05-01", progress=True
        )
        kafka_port, controller_port, redis_port = free_ports(3)
        libs = ensure_kafka_jars(load_settings().home)
        with (
            KafkaBroker(workdir / "kafka", libs, port=kafka_port, controller_port=controller_port)
            as broker,
            RedisServer(redis_port, workdir / "redis", binary=ensure_redis_server_binary())
            as redis,
        ):  # fmt: skip
            settings = settings_for(broker, redis, registry, workdir / "home")
            backlog, rest = lines[: args.backlog], lines[args.backlog :]
            produce_all(settings.kafka, settings.topics.transactions, backlog)
            scorer = Scorer(settings, workdir / "scorer.log")
            try:
                maximum = measure_max(scorer, len(backlog))
                rate = maximum * args.share
                seconds = args.minutes * 60
                available = len(rest) / rate
                if available < seconds:
                    print(f"only {available:.0f} s of traffic at {rate:.0f} ev/s; shortening")
                    seconds = available
                samples = soak(scorer, rest, rate, seconds, settings)
            finally:
                code = scorer.stop()
                log_tail = (workdir / "scorer.log").read_text(errors="replace")[-3000:]
    summary = {
        "started_at": started_at,
        "machine": {**info, "load_average_at_end": os.getloadavg()},
        "registry": str(registry),
        "maximum_events_per_s": round(maximum, 1),
        "soak_events_per_s": round(rate, 1),
        "ratio_soak_to_maximum": args.share,
        "soak_seconds": round(seconds),
        "scorer_exit_code": code,
        **summarise(samples, seconds, rate),
    }
    print(json.dumps(summary, indent=2))
    if code != 0:
        print(log_tail)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"summary": summary, "samples": [asdict(s) for s in samples]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
