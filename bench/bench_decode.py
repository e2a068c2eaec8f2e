"""Strict decoding: what refusing repeated JSON keys costs per event, against decoding without it.

    .venv/bin/python -m bench.bench_decode                 # ~1 minute
    .venv/bin/python -m bench.bench_decode --json bench/results/decode.json

Events: a simulated bank's (``stream.simulate``, 300 customers over 7 days), as the producer
writes them. Measured in one run, alternating, ``--repeat`` times (best and median):

* ``reference``: what ``decode`` did before the check - ``orjson.loads``, then pydantic's strict
  ``model_validate_json`` of the bytes;
* ``decode``: ``schemas.codec.decode`` as the scorer calls it (the check included); events
  without a backslash take the fast path (the ':' count against a re-encoding);
* ``decode, escapes``: the same events with a memo holding quotes (``\\"``), which takes the
  slow path (the standard library's parser with a pairs hook);
* ``duplicate_key`` alone, on each path.

The figure that matters is ``decode`` / ``reference``: the share the check adds to decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from schemas import TransactionEvent, decode
from schemas.codec import duplicate_key
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import simulate
from stream.simulate.render import Renderer


def simulated_lines(customers: int, days: int, seed: int) -> list[bytes]:
    sim = simulate(SimulationConfig(customers=customers, days=days, seed=seed))
    return list(Renderer(sim).events_json(0, len(sim.events)))


def per_event_us(lines: Sequence[bytes], fn: Callable[[bytes], object]) -> float:
    started = time.perf_counter()
    for line in lines:
        fn(line)
    return (time.perf_counter() - started) / len(lines) * 1e6


def reference(line: bytes) -> TransactionEvent:
    orjson.loads(line)
    return TransactionEvent.model_validate_json(line, strict=True)


def with_escapes(line: bytes) -> bytes:
    return orjson.dumps({**orjson.loads(line), "memo": 'invoice "17" / ref \\ 2'})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=1000, help="events per timed run")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    lines = simulated_lines(args.customers, args.days, seed=3)
    escaped = [with_escapes(line) for line in lines]
    parsed = [orjson.loads(line) for line in lines]
    parsed_escaped = [orjson.loads(line) for line in escaped]
    assert all(b"\\" not in line for line in lines)
    runs: dict[str, list[float]] = {}
    cases: dict[str, tuple[Sequence[bytes], Callable[[bytes], object]]] = {
        "reference": (lines, reference),
        "decode": (lines, lambda raw: decode(TransactionEvent, raw)),
        "reference, escapes": (escaped, reference),
        "decode, escapes": (escaped, lambda raw: decode(TransactionEvent, raw)),
    }
    parsed_by_raw = dict(zip(lines, parsed, strict=True)) | dict(
        zip(escaped, parsed_escaped, strict=True)
    )
    cases["duplicate_key, fast path"] = (lines, lambda raw: duplicate_key(raw, parsed_by_raw[raw]))
    cases["duplicate_key, slow path"] = (
        escaped,
        lambda raw: duplicate_key(raw, parsed_by_raw[raw]),
    )
    names = list(cases)
    # Short timed runs, alternating and rotating the order, many times: on a shared machine the
    # best run of each is the least disturbed, and every case met the same disturbances.
    for round_ in range(args.repeat):
        start = (round_ * args.chunk) % max(1, len(lines) - args.chunk)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            data, fn = cases[name]
            runs.setdefault(name, []).append(per_event_us(data[start : start + args.chunk], fn))

    figures = {
        name: {"best_us": round(min(v), 2), "median_us": round(statistics.median(v), 2)}
        for name, v in runs.items()
    }
    best_ratio = figures["decode"]["best_us"] / figures["reference"]["best_us"]
    escaped_ratio = figures["decode, escapes"]["best_us"] / figures["reference, escapes"]["best_us"]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "events": len(lines),
        "mean_event_bytes": round(sum(map(len, lines)) / len(lines)),
        "figures": figures,
        "decode_over_reference": round(best_ratio, 3),
        "decode_over_reference_escapes": round(escaped_ratio, 3),
    }
    print(f"{len(lines):,} events, {result['mean_event_bytes']} bytes on average")
    for name, figure in figures.items():
        print(f"  {name:<28} {figure['best_us']:>7.2f} us best  {figure['median_us']:>7.2f} median")
    print(f"decode / reference: {best_ratio:.3f} (escapes: {escaped_ratio:.3f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
