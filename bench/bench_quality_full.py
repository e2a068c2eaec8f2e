"""The quality table's estimate checked on the full test days: every seed of the CPU default
that ``bench_quality`` registered, and the GBDT at the same seeds, scored on every test event
rather than on the weighted subsample (all suspicious events + one legitimate in ten,
weighted back) the table uses.

    .venv/bin/python -m bench.bench_quality_full --threads 1 --out OUT [OUT2 ...]

``OUT`` is a ``bench_quality --out`` directory (its ``quality.json`` names the registered
versions; several directories of the same bank pool their seeds). Why it exists: a legitimate
event of the subsample stands for ten, so a few look-alikes ranked among the first hundred
scores move a model's AP by several points; this says whether a seed's AP, and the gap to the
trees, is the model's or the subsample's. Writes ``bench/results/quality_full_test.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_quality import (
    DEFAULT,
    GBDT,
    add_table_options,
    dataset,
    saved_rows,
    scored,
    table_split,
)
from bench.machine import run_facts
from models.gbdt import train_gbdt
from models.inference import configure_cpu_threads, load_model
from models.settings import ModelSettings

RESULTS = Path(__file__).parent / "results" / "quality_full_test.json"


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, nargs="+", required=True)
    add_table_options(parser)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_cpu_threads(args.threads)

    sim_dir = next(args.out[0].glob("sim-*"))
    full = dataset(sim_dir)
    table = table_split(full, args.eval_legit_rate, args.data_seed)
    validation, subsample = table.validation, table.test
    position = {event_id: i for i, event_id in enumerate(full.test.event_ids)}
    rows = np.array([position[event_id] for event_id in subsample.event_ids])

    seeds: dict[str, dict[str, Any]] = {}
    for out in args.out:
        saved = saved_rows(out, full)  # every run's bank checked, not the first one's only
        settings = ModelSettings(registry_dir=out / "registry", device="cpu")
        for run in saved["rows"].get(DEFAULT, []):
            started = time.perf_counter()
            model = load_model(settings, run["version"])
            student = model.predict_batch(full.test.texts, full.test.features).scores
            trees = train_gbdt(
                full.train.features, full.train.labels, validation.features, validation.labels,
                feature_names=full.feature_names, valid_weights=validation.weights,
                seed=run["seed"], threads=args.threads,
            ).predict(full.test.features)  # fmt: skip
            entry = {
                DEFAULT: {"full": scored(student, full.test),
                          "subsample": scored(student[rows], subsample)},
                GBDT: {"full": scored(trees, full.test),
                       "subsample": scored(trees[rows], subsample)},
                "version": run["version"],
                "seconds": round(time.perf_counter() - started),
            }  # fmt: skip
            seeds[str(run["seed"])] = entry
            print(json.dumps({"seed": run["seed"], **entry}), flush=True)

    summary: dict[str, Any] = {}
    for where in ("full", "subsample"):
        figures: dict[str, Any] = {}
        for name in (DEFAULT, GBDT):
            aps = [s[name][where]["ap"] for s in seeds.values()]
            recalls = [s[name][where]["recall_at_budget"] for s in seeds.values()]
            figures[name] = {"ap": spread(aps), "recall_at_budget": spread(recalls)}
        figures["default_to_gbdt_ap"] = round(
            figures[DEFAULT]["ap"]["mean"] / figures[GBDT]["ap"]["mean"], 4
        )
        summary[where] = figures
    result = {
        "what": "the CPU default's registered seeds and the GBDT at the same seeds, on the full "
        "test days and on the table's weighted subsample",
        **run_facts("bench.bench_quality_full", threads=args.threads),
        "test_events": len(full.test),
        "subsample_events": len(subsample),
        "test_suspicious": int(full.test.labels.sum()),
        "summary": summary,
        "seeds": seeds,
    }
    print(json.dumps(summary, indent=2))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
