"""Context store + narratives: events per second per process, and memory per active customer.

    .venv/bin/python -m bench.bench_context
    .venv/bin/python -m bench.bench_context --quick            # smaller run
    .venv/bin/python -m bench.bench_context --redis-url redis://127.0.0.1:6379/0

Workload: a simulated bank (``stream.simulate``; 3,000 customers over 50 days by default, about
410,000 events with the simulator's fraud and laundering scenarios). The first 30 days are
replayed to build realistic histories (30-day windows full, counterparties seen, dedupe memory
in use); the measurements use the days after, so every measured event meets real history.

Figures (target: >= 20,000 events/s per process with batches of 256):

* ``sequential``: per batch, ``ContextStore.update_batch`` then ``build_narrative`` for each
  event - Redis and Python take turns.
* ``pipelined``: ``submit_batch`` of batch k+1 before narrating batch k, as a scorer loop can
  do: Redis applies one batch while Python narrates the previous one.
* memory: ``MEMORY USAGE`` of every key of every customer (and counterparty, terminal) after
  the replay, and ``used_memory`` growth per customer (which includes their counterparties);
  and the scorer's event-id claims of the replayed events, in ``used_memory`` per event.

Reference, measured in the same run and alternating with the measurements (``--repeat``
times; best and median reported, the best being the least disturbed by other jobs): a pipeline
of 256 ``HINCRBY`` per round trip through the same redis-py client, in commands per second -
the cheapest thing a batch of 256 can make Redis do.

Each run also reports CPU times (this process, and the Redis server from ``INFO cpu``) and the
rate they imply with a core each, which other jobs on a shared machine disturb far less than
wall time; and ``lua_calibration_us``, the Redis CPU time of one ``redis.call`` plus one small
table inside Lua, to compare machines and loads.

Redis: ``--redis-url``, or a temporary ``redis-server`` started here on a free port (no
persistence, 127.0.0.1 only) and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from tqdm.auto import tqdm

from bench.machine import machine
from schemas import TransactionEvent, decode
from schemas.narrative import build_narrative, default_spec
from stream.context import keys
from stream.context.store import ContextLimits, ContextStore
from stream.devenv.process import free_ports
from stream.devenv.redis_server import RedisServer
from stream.pipeline.records import ScoredRecordStore, claim_key
from stream.settings import ContextSettings
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import simulate
from stream.simulate.render import Renderer

BATCH = 256


@contextmanager
def a_redis(url: str | None) -> Iterator[redis.Redis[bytes]]:
    if url:
        client: redis.Redis[bytes] = redis.Redis.from_url(url)
        with client:
            yield client
        return
    with tempfile.TemporaryDirectory(prefix="bench-context-") as tmp:
        server = RedisServer(free_ports(1)[0], Path(tmp))
        with server, server.client() as client:
            yield client


def simulated_events(customers: int, days: int, seed: int) -> list[TransactionEvent]:
    sim = simulate(SimulationConfig(customers=customers, days=days, seed=seed))
    renderer = Renderer(sim)
    total = len(sim.events)
    events: list[TransactionEvent] = []
    with tqdm(total=total, desc="decode events", unit="ev") as bar:
        for lo in range(0, total, 5000):
            hi = min(total, lo + 5000)
            events.extend(decode(TransactionEvent, line) for line in renderer.events_json(lo, hi))
            bar.update(hi - lo)
    events.sort(key=lambda e: (e.event_time, e.event_id))
    return events


def batches_of(events: Sequence[TransactionEvent]) -> list[Sequence[TransactionEvent]]:
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


@dataclass
class Clock:
    """Wall time, this process's CPU time and the Redis server's CPU time over one run.

    On a shared machine wall time also counts other jobs; CPU time mostly does not. So each
    run also reports what the CPU time implies with a core each for Python and Redis:
    ``events / (python + redis)`` when they take turns (sequential), ``events / max(...)``
    when they overlap (pipelined)."""

    client: redis.Redis[bytes]
    wall: float = 0.0
    python: float = 0.0
    redis: float = 0.0

    def _redis_cpu(self) -> float:
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def __enter__(self) -> Clock:
        self.wall, self.python, self.redis = (
            time.perf_counter(),
            time.process_time(),
            self._redis_cpu(),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.python = time.process_time() - self.python
        self.redis = self._redis_cpu() - self.redis

    def rates(self, count: int, overlapped: bool) -> dict[str, float]:
        busy = max(self.python, self.redis) if overlapped else self.python + self.redis
        return {
            "wall": count / self.wall,
            "cpu_bound": count / busy,
            "python_cpu_us": 1e6 * self.python / count,
            "redis_cpu_us": 1e6 * self.redis / count,
        }


def run_sequential(
    store: ContextStore, batches: list[Sequence[TransactionEvent]], clock: Clock
) -> dict[str, float]:
    spec = default_spec()
    count = sum(len(b) for b in batches)
    with clock:
        for batch in batches:
            contexts = store.update_batch(batch)
            for event, context in zip(batch, contexts, strict=True):
                build_narrative(event, context.features, spec, context.story)
    return clock.rates(count, overlapped=False)


def run_pipelined(
    store: ContextStore, batches: list[Sequence[TransactionEvent]], clock: Clock
) -> dict[str, float]:
    spec = default_spec()
    count = sum(len(b) for b in batches)
    with clock:
        pending = store.submit_batch(batches[0])
        for k, batch in enumerate(batches):
            following = store.submit_batch(batches[k + 1]) if k + 1 < len(batches) else None
            for event, context in zip(batch, pending.result(), strict=True):
                build_narrative(event, context.features, spec, context.story)
            if following is not None:
                pending = following
    return clock.rates(count, overlapped=True)


def reference_rate(client: redis.Redis[bytes], round_trips: int, clock: Clock) -> dict[str, float]:
    """Commands per second of 256-command HINCRBY pipelines (one round trip each)."""
    key = "bench-context-reference"
    with clock:
        for _ in range(round_trips):
            pipe = client.pipeline(transaction=False)
            for i in range(BATCH):
                pipe.hincrby(key, str(i), 1)
            pipe.execute()
    client.delete(key)
    return clock.rates(round_trips * BATCH, overlapped=False)


_CALIBRATION = """
local n = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], 1, 'a', 2, 'b', 3, 'c')
local t
for i = 1, n do
  redis.call('ZCOUNT', KEYS[1], 2, '+inf')
  t = { i, i + 1, i + 2 }
end
redis.call('DEL', KEYS[1])
return 1
"""


def lua_calibration(client: redis.Redis[bytes], clock: Clock, n: int = 50_000) -> float:
    """Redis CPU microseconds per (one redis.call + one small table) inside Lua: how fast this
    machine runs the kind of work the scripts do, to compare runs on different machines/loads."""
    with clock:
        client.eval(_CALIBRATION, 1, "bench-context-calibration", n)  # type: ignore[no-untyped-call]
    return 1e6 * clock.redis / n


def claim_memory(
    client: redis.Redis[bytes], namespace: str, events: Sequence[TransactionEvent]
) -> float:
    """``used_memory`` per event of the scorer's event-id claims (docs/scorer.md,
    "Idempotency"), taken for ``events`` as the scorer takes them; deleted afterwards."""
    store = ScoredRecordStore(client, namespace, 90 * 86_400)
    before = int(client.info("memory")["used_memory"])
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        store.claim_batch(
            [(e.event_id, f"transactions[0]@{start + i}") for i, e in enumerate(chunk)]
        )
    used = int(client.info("memory")["used_memory"]) - before
    names = [claim_key(namespace, e.event_id) for e in events]
    for start in range(0, len(names), 1000):
        client.delete(*names[start : start + 1000])
    return used / len(events)


def memory(client: redis.Redis[bytes], namespace: str, customers: set[str]) -> dict[str, Any]:
    """Bytes per entity, summed over its keys (MEMORY USAGE, all samples)."""
    per_entity: dict[str, dict[str, int]] = {"c": {}, "p": {}, "t": {}}
    pipe = client.pipeline(transaction=False)
    names: list[bytes] = list(client.scan_iter(match=keys.namespace_pattern(namespace), count=5000))
    for name in names:
        pipe.memory_usage(name, samples=0)
    for name, used in zip(names, pipe.execute(), strict=True):
        tag = name.decode().split("{", 1)[1].split("}", 1)[0]
        kind, _, entity = tag.partition(":")
        if kind in per_entity and entity:
            per_entity[kind][entity] = per_entity[kind].get(entity, 0) + int(used or 0)

    def summary(values: list[int]) -> dict[str, float]:
        values = sorted(values)
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "mean": statistics.fmean(values),
            "p50": values[len(values) // 2],
            "p90": values[int(len(values) * 0.9)],
            "p99": values[int(len(values) * 0.99)],
            "max": values[-1],
        }

    active = [v for k, v in per_entity["c"].items() if k in customers]
    return {
        "customer_bytes": summary(active),
        "counterparty_bytes": summary(list(per_entity["p"].values())),
        "terminal_bytes": summary(list(per_entity["t"].values())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--warmup-days", type=int, default=30)
    parser.add_argument("--measure-batches", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1,000 customers, 30 days")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--dedupe-cap", type=int, help="ContextLimits.dedupe_cap (default: the store's)"
    )
    args = parser.parse_args()
    if args.quick:
        args.customers, args.days, args.warmup_days, args.measure_batches = 1000, 30, 15, 25

    events = simulated_events(args.customers, args.days, args.seed)
    first = events[0].event_time
    warm = [e for e in events if (e.event_time - first).days < args.warmup_days]
    rest = batches_of(events[len(warm) :])
    needed = 2 * args.repeat * args.measure_batches
    if len(rest) < needed:
        raise SystemExit(f"only {len(rest)} batches after the warm-up; {needed} needed")

    results: dict[str, Any] = {
        "machine": machine(),
        "workload": {
            "customers": args.customers,
            "days": args.days,
            "events": len(events),
            "warmup_events": len(warm),
            "batch": BATCH,
            "measured_events_per_run": args.measure_batches * BATCH,
        },
    }
    namespace = f"bench-{os.getpid()}"
    with a_redis(args.redis_url) as client:
        used_before = int(client.info("memory")["used_memory"])
        limits = ContextLimits(dedupe_cap=args.dedupe_cap) if args.dedupe_cap else None
        results["workload"]["dedupe_cap"] = (limits or ContextLimits()).dedupe_cap
        with ContextStore(
            client, ContextSettings(namespace=namespace), limits, create_namespace=True
        ) as store:
            started = time.perf_counter()
            for batch in tqdm(batches_of(warm), desc="warm-up replay", unit="batch"):
                store.update_batch(batch)
            results["warmup_events_per_s"] = len(warm) / (time.perf_counter() - started)
            used_after = int(client.info("memory")["used_memory"])
            active = {e.customer_id for e in warm}
            results["memory"] = memory(client, namespace, active)
            results["memory"]["used_memory_per_customer"] = (used_after - used_before) / len(active)
            results["memory"]["claim_bytes_per_event"] = claim_memory(client, namespace, warm)

            runs: dict[str, list[dict[str, float]]] = {
                "sequential": [],
                "pipelined": [],
                "reference": [],
            }
            chunks = iter(range(0, needed, args.measure_batches))
            clock = Clock(client)
            results["lua_calibration_us"] = [lua_calibration(client, clock)]
            for _ in tqdm(range(args.repeat), desc="measure", unit="round"):
                for mode, run in (("sequential", run_sequential), ("pipelined", run_pipelined)):
                    start = next(chunks)
                    runs[mode].append(run(store, rest[start : start + args.measure_batches], clock))
                runs["reference"].append(reference_rate(client, args.measure_batches, clock))
                results["lua_calibration_us"].append(lua_calibration(client, clock))
            store.drop_namespace()
    for name, measured in runs.items():
        results[name] = {
            metric: {
                "best": max(m[metric] for m in measured)
                if metric in ("wall", "cpu_bound")
                else min(m[metric] for m in measured),
                "median": statistics.median(m[metric] for m in measured),
            }
            for metric in measured[0]
        }
        results[name]["runs"] = measured
    for mode in ("sequential", "pipelined"):
        for metric in ("wall", "cpu_bound"):
            results[mode][f"ratio_{metric}"] = (
                results[mode][metric]["best"] / results["reference"][metric]["best"]
            )
    results["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
