"""The framework alone - the scorer with a trivial model - in two checkouts, alternated.

Issue 20 asks for the framework alone at 1.5x its figure before the issue, "with the old commit
measured beside it". This machine's pace drifts by 15-30 % within minutes, so one run of each
says little: this runs the same measurement in each checkout in turn, each in its own process
with its own broker and Redis, ``--rounds`` times, and reports the median of each checkout's
best run per round and the ratio of the medians.

    git worktree add ../before 26fd12e     # the code before issue 20
    .venv/bin/python -m bench.bench_framework --against ../before --rounds 3 \\
        --json bench/results/framework_alone.json

Each measurement is ``bench.bench_scorer``'s trivial-model pipeline (the quick bank: 600
customers x 10 days, 6 partitions, batches of up to 256), done by a child process that imports
that checkout's code: only ``event_lines``, ``infrastructure``, ``untrained_default_model`` and
``run_pipeline`` of its ``bench/bench_scorer.py`` are used, which every checkout since issue 16
has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.bench_model import machine

HERE = Path(__file__).resolve().parents[1]

# Run in the child, with the checkout's directory first on sys.path.
_CHILD = r"""
import inspect, json, sys, tempfile
from pathlib import Path
import numpy as np
import bench.bench_scorer as bs
from stream.settings import ModelSettings, Settings
try:
    from schemas.features import FEATURE_NAMES
except ImportError:  # checkouts before the layers (issue 20) kept them in stream.context
    from stream.context.features import FEATURE_NAMES

runs = int(sys.argv[1])
with tempfile.TemporaryDirectory(prefix="bench-framework-") as tmp:
    work = Path(tmp)
    lines = bs.event_lines(work, 600, 10)
    with bs.infrastructure(work) as (broker, redis_server):
        registry = work / "registry"
        # the trivial model replaces the champion's scores; the champion only has to load
        bs.untrained_default_model(
            registry, ["outbound transfer of 10 USD"] * 200,
            np.zeros((200, len(FEATURE_NAMES)), np.float32),
        )
        base = Settings(
            kafka=broker.kafka_settings(),
            redis=redis_server.redis_settings(),
            model=ModelSettings(registry_dir=registry),
        )
        extra = {}
        if "servers" in inspect.signature(bs.run_pipeline).parameters:
            extra["servers"] = {"broker": broker.pid or 0, "redis-server": redis_server.pid or 0}
        for _ in range(runs):
            result = bs.run_pipeline(base, lines, batch_max_size=256, trivial=True, **extra)
            print("RESULT " + json.dumps({
                "events_per_s": result.events_per_s,
                "events": result.events,
                "stages": getattr(result, "stages", None),
                "process_cpu": getattr(result, "process_cpu", None),
            }), flush=True)
"""


def commit_of(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip() or "unknown"


def measure(checkout: Path, runs: int) -> list[dict[str, Any]]:
    """``runs`` trivial-model pipelines on ``checkout``'s code, in one child process."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(runs)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    results = [
        json.loads(line.removeprefix("RESULT "))
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if done.returncode != 0 or len(results) != runs:
        raise RuntimeError(f"the run in {checkout} failed:\n{done.stderr[-3000:]}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="the other checkout")
    parser.add_argument("--this", type=Path, default=HERE, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2, help="runs per process (best kept)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    checkouts = {"before": args.against.resolve(), "after": args.this.resolve()}
    rounds: list[dict[str, list[dict[str, Any]]]] = []
    for index in range(args.rounds):
        measured = {}
        for name, checkout in checkouts.items():
            measured[name] = measure(checkout, args.runs)
            rates = ", ".join(f"{r['events_per_s']:,.0f}" for r in measured[name])
            print(f"round {index + 1}, {name}: {rates} events/s", flush=True)
        rounds.append(measured)
    best = {
        name: [max(r["events_per_s"] for r in measured[name]) for measured in rounds]
        for name in checkouts
    }
    median = {name: statistics.median(rates) for name, rates in best.items()}
    ratio = median["after"] / median["before"]
    pairs = [a / b for a, b in zip(best["after"], best["before"], strict=True)]
    print(
        f"framework alone, median of each round's best: before {median['before']:,.0f}, "
        f"after {median['after']:,.0f} events/s: {ratio:.2f}x "
        f"(per round {', '.join(f'{p:.2f}' for p in pairs)})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "machine": machine(),
            "commits": {name: commit_of(path) for name, path in checkouts.items()},
            "best_per_round": best,
            "median": median,
            "ratio": ratio,
            "ratio_per_round": pairs,
            "rounds": rounds,
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
