"""Scaling out: one scorer process against two on the same topic (one consumer group).

Each scorer is a real ``riskstream run scorer`` process; the consumer group spreads the
topic's 6 partitions over them. The figure is the rate at which the group commits the
input, timed from the first commit to the last, for 1 and then 2 processes on fresh topics
and a fresh context namespace each. On this 2-core machine the broker, Redis and every scorer
share the same two cores, so the run also records the CPU each process spent: what bounds the
ratio is read from those, not guessed.

    .venv/bin/python -m bench.bench_scale_out --registry REGISTRY [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from bench.bench_model import machine
from bench.bench_scorer import committed, event_lines, fresh_topics, infrastructure, produce
from bench.budget import process_cpu_s
from models.settings import ModelSettings
from stream.devenv import free_ports
from stream.settings import (
    ContextSettings,
    ScorerSettings,
    Settings,
    to_env,
)


def run_group(base: Settings, lines: list[bytes], processes: int, workdir: Path) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    topics = fresh_topics(base.kafka, "s")
    produce(base.kafka, topics.transactions, lines)
    children = []
    for index in range(processes):
        (port,) = free_ports(1)
        settings = base.model_copy(
            update={
                "topics": topics,
                "context": ContextSettings(namespace=f"scale-{run}"),
                "scorer": ScorerSettings(
                    group_id=f"scale-{run}", batch_max_size=256, batch_max_wait_ms=50,
                    metrics_port=port,
                ),
            }
        )  # fmt: skip
        log = (workdir / f"scorer-{run}-{index}.log").open("wb")
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "scorer"],
                env={**os.environ, **to_env(settings), "HF_HUB_OFFLINE": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    watcher = Consumer({**base.kafka.client_config(), "group.id": f"scale-{run}"})
    total = len(lines)
    first_t = first_n = None
    cpu_start: list[float] = []
    try:
        while True:
            done = committed(watcher, topics.transactions)
            now = time.perf_counter()
            if first_t is None and done > 0:
                first_t, first_n = now, done
                cpu_start = [process_cpu_s(c.pid) for c in children]
            if done >= total:
                break
            if any(c.poll() is not None for c in children):
                raise RuntimeError(f"a scorer stopped early; logs in {workdir}")
            time.sleep(0.2)
        cpu_end = [process_cpu_s(c.pid) for c in children]
    finally:
        watcher.close()
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=60)
    if first_t is None or first_n is None:
        raise RuntimeError("nothing was committed")
    seconds = now - first_t
    events = total - first_n
    return {
        "processes": processes,
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds > 0 else float("nan"),
        "scorer_cpu_s": [round(b - a, 2) for a, b in zip(cpu_start, cpu_end, strict=True)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    customers, days = (600, 10) if args.quick else (1500, 14)
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        lines = event_lines(work, customers, days)
        results["events"] = len(lines)
        with infrastructure(work) as (broker, redis_server):
            base = Settings(
                kafka=broker.kafka_settings(),
                redis=redis_server.redis_settings(),
                model=ModelSettings(registry_dir=args.registry),
            )
            for processes in (1, 2):
                cpu_before = {
                    "broker": process_cpu_s(broker.pid or 0),
                    "redis-server": process_cpu_s(redis_server.pid or 0),
                }
                result = run_group(base, lines, processes, work)
                result["server_cpu_s"] = {
                    "broker": round(process_cpu_s(broker.pid or 0) - cpu_before["broker"], 2),
                    "redis-server": round(
                        process_cpu_s(redis_server.pid or 0) - cpu_before["redis-server"], 2
                    ),
                }
                results[f"scorers_{processes}"] = result
                print(f"{processes} scorer(s): {result}", flush=True)
    one, two = results["scorers_1"]["events_per_s"], results["scorers_2"]["events_per_s"]
    results["ratio_2_to_1"] = two / one
    print(f"two scorers / one: {two / one:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
