"""The CPU default's numeric side path trained alone, against the GBDT on the same features, at
the same seeds, on the quality table's split and subsamples.

    .venv/bin/python -m bench.bench_side_path --sim OUT/sim-2000x70-s0 --threads 1

``OUT`` is a ``bench_quality --out`` directory. The side path is the student's own piecewise-
linear encoding and MLP (its bins fitted as ``starting_model`` fits them for that seed) with
a head of its own, trained on the numbers only - no text - by ``models.side_path``, the stage
``TrainConfig.side_warmup_epochs`` runs before a hybrid's steps. A seed costs seconds, not the
ten minutes of a student.

Why it exists: the student trails the trees on the same features and its AP spreads six
times wider across seeds (BENCHMARKS "Quality"). This says how much of the gap and of the
spread belong to the numeric path alone, before any text, and is the fast loop in which to
try a sharper numeric path. Writes ``bench/results/side_path.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.bench_quality import dataset, scored, table_split
from bench.machine import run_facts
from models.examples import SplitData
from models.gbdt import train_gbdt
from models.inference import configure_cpu_threads
from models.side_path import train_side_path
from models.train import seed_everything, starting_model
from models.train_config import preset

RESULTS = Path(__file__).parent / "results" / "side_path.json"


def side_path_alone(
    split: SplitData, seed: int, epochs: int, batch_size: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """One seed of the side path alone; its test figures and the epoch kept. ``overrides``
    change the student preset (side-path width, bins, dropout, learning rate...)."""
    config = preset("student", seed=seed, **overrides)
    seed_everything(seed)
    student = starting_model(config, split.feature_names, split.train)
    run = train_side_path(
        student,
        split.train,
        split.validation,
        config,
        epochs=epochs,
        batch_size=batch_size,
    )
    return {
        "validation_ap": round(run.validation_ap, 4),
        "epoch_kept": run.epoch_kept,
        **scored(run.alone.scores(split.test.features), split.test),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(float(np.mean(values)), 4),
        "sd": round(float(np.std(values)), 4),
        "min": round(float(np.min(values)), 4),
        "max": round(float(np.max(values)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", type=Path, required=True, help="a bench_quality sim-* folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-legit-rate", type=float, default=0.1)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a student preset field, e.g. --set feature_hidden=128 (repeatable)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    overrides = {k: orjson.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    configure_cpu_threads(args.threads)

    full = dataset(args.sim)
    split = table_split(full, args.eval_legit_rate, args.data_seed)
    seeds: dict[str, dict[str, Any]] = {}
    for seed in args.seeds:
        started = time.perf_counter()
        side = side_path_alone(split, seed, args.epochs, args.batch_size, overrides)
        side["seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        trees = train_gbdt(
            split.train.features, split.train.labels,
            split.validation.features, split.validation.labels,
            feature_names=split.feature_names, valid_weights=split.validation.weights,
            seed=seed, threads=args.threads,
        )  # fmt: skip
        gbdt = {
            **scored(trees.predict(split.test.features), split.test),
            "seconds": round(time.perf_counter() - started, 1),
        }
        seeds[str(seed)] = {"side_path": side, "gbdt": gbdt}
        print(orjson.dumps({"seed": seed, "side_path": side, "gbdt": gbdt}).decode(), flush=True)

    summary: dict[str, Any] = {}
    for name in ("side_path", "gbdt"):
        summary[name] = {
            metric: spread([s[name][metric] for s in seeds.values()])
            for metric in ("ap", "recall_at_budget")
        }
    summary["side_path_to_gbdt_ap"] = round(
        summary["side_path"]["ap"]["mean"] / summary["gbdt"]["ap"]["mean"], 4
    )
    result = {
        "what": "the CPU default's numeric side path trained alone (no text) and the GBDT, "
        "same features, seeds, split and weighted subsamples as the quality table",
        **run_facts("bench.bench_side_path", threads=args.threads),
        "narrative_version": full.narrative_version,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "overrides": overrides,
        "summary": summary,
        "seeds": seeds,
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
