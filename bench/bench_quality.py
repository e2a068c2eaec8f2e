"""The quality table: GBDT baseline vs narrative Transformers on one simulated bank, one time
split, the same metrics.

    .venv/bin/python -m bench.bench_quality                   # ~60 min on 2 cores
    .venv/bin/python -m bench.bench_quality --skip-minilm     # students + GBDT, ~10 min

Steps: simulate (``riskstream simulate``) → dataset (real ContextStore on a redis-server this
script starts on 127.0.0.1, then the narrative builder; Parquet cache reused on a rerun) →
train on the first 60 % of days, early-stop and calibrate on the next 20 %, report on the last
20 % — for

* GBDT (LightGBM) on the numeric context features behind the narratives;
* the 2-layer/128 student, text only, and hybrid (features through a side path);
* MiniLM-L6 fine-tuned (hybrid or text-only, following whichever the student did better with),
  on all suspicious + a 10 % sample of legitimate training events (loss-weighted back);
* a student distilled from that MiniLM;

plus, for the chosen CPU default, the same model with dynamic int8 quantisation.
Each row: average precision, ROC-AUC, recall at a 1 % alert budget, recall at 50 % precision,
per-typology recall, training time, and inference narratives/s on the test days (batch 256),
with a plain-numpy reference measured in the same run (LightGBM's own prediction speed) for the
ratio. Results go to ``<out>/quality.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluate import EvalReport, evaluate
from models.examples import SplitData
from models.gbdt import train_gbdt
from models.inference import LoadedModel, configure_cpu_threads, load_model, quantize_int8
from models.registry import Registry
from models.train import preset
from models.workflow import RegisteredRun, Targets, evaluate_model, train_and_register
from stream.settings import ModelSettings

TARGETS = Targets("alert_rate", 0.01, 0.5)


def simulate(out: Path, customers: int, days: int, seed: int) -> None:
    if (out / "events.jsonl").is_file():
        print(f"reusing simulation in {out}")
        return
    command = [
        sys.executable, "-m", "stream.cli", "simulate", "--out", str(out),
        "--customers", str(customers), "--days", str(days), "--seed", str(seed),
    ]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def dataset(sim_dir: Path) -> SplitData:
    from models.dataset import CACHE_DIR_NAME, load_split
    from stream.devenv.process import free_ports
    from stream.devenv.redis_server import RedisServer
    from stream.settings import load_settings

    if (sim_dir / CACHE_DIR_NAME / "meta.json").is_file():
        return SplitData.load(sim_dir / CACHE_DIR_NAME)
    with tempfile.TemporaryDirectory() as scratch:
        server = RedisServer(port=free_ports()[0], data_dir=Path(scratch))
        with server:
            settings = load_settings(redis=server.redis_settings())
            return load_split(sim_dir, settings)


def inference_rate(model: LoadedModel, split: SplitData) -> float:
    texts = split.test.texts[:2048]
    features = split.test.features[:2048] if model.hybrid else None
    model.predict_batch(texts[:256], features[:256] if features is not None else None)
    started = time.perf_counter()
    model.predict_batch(texts, features)
    return len(texts) / (time.perf_counter() - started)


def row(name: str, report: EvalReport, train_s: float, rate: float, **extra: Any) -> dict[str, Any]:
    return {
        "model": name,
        "average_precision": round(report.average_precision, 4),
        "roc_auc": round(report.roc_auc, 4),
        "recall_at_budget": round(report.recall_at_budget, 4),
        "recall_at_precision": round(report.recall_at_precision, 4),
        "typology_accuracy": report.typology_accuracy,
        "per_typology_recall": {k: round(v, 3) for k, v in report.per_typology_recall.items()},
        "train_seconds": round(train_s, 1),
        "narratives_per_s": round(rate, 1),
        **extra,
    }


def transformer_row(name: str, run: RegisteredRun, split: SplitData) -> dict[str, Any]:
    return row(
        name,
        run.report,
        run.result.seconds,
        inference_rate(run.model, split),
        version=run.version,
        best_step=run.result.best_step,
        validation_ap=round(run.result.best_validation_ap, 4),
    )


def print_tables(rows: list[dict[str, Any]], gbdt_rate: float) -> None:
    print(f"\nreference: GBDT predicts {gbdt_rate:,.0f} events/s on this machine in this run\n")
    print("| model | AP | ROC-AUC | recall@1% | recall@P50 | train s | narratives/s | ÷ GBDT/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for entry in rows:
        print(
            f"| {entry['model']} | {entry['average_precision']:.4f} | {entry['roc_auc']:.4f} | "
            f"{entry['recall_at_budget']:.3f} | {entry['recall_at_precision']:.3f} | "
            f"{entry['train_seconds']:.0f} | {entry['narratives_per_s']:,.0f} | "
            f"{entry['narratives_per_s'] / gbdt_rate:.5f} |"
        )
    typologies = sorted({t for entry in rows for t in entry["per_typology_recall"]})
    print("\nper-typology recall at the 1 % alert budget:\n")
    print("| model | " + " | ".join(typologies) + " |")
    print("| --- |" + " ---: |" * len(typologies))
    for entry in rows:
        cells = [f"{entry['per_typology_recall'].get(t, float('nan')):.2f}" for t in typologies]
        print(f"| {entry['model']} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".riskstream/bench/quality"))
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="ignore an earlier run's rows")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: physical cores)"
    )
    parser.add_argument("--minilm-steps", type=int, default=None)
    parser.add_argument("--student-steps", type=int, default=None)
    parser.add_argument(
        "--eval-legit-rate",
        type=float,
        default=0.1,
        help="share of legitimate validation/test events scored (weighted back)",
    )
    args = parser.parse_args()

    configure_cpu_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sim_dir = args.out / f"sim-{args.customers}x{args.days}-s{args.seed}"
    started = time.perf_counter()
    simulate(sim_dir, args.customers, args.days, args.seed)
    full = dataset(sim_dir)
    print(f"dataset ready in {time.perf_counter() - started:.0f}s:", flush=True)
    for name, window in full.data_window().items():
        part = getattr(full, name)
        print(
            f"  {name:<10} {window[0]}..{window[1]} {len(part):>8,} events, "
            f"{int(part.labels.sum()):>5} suspicious"
        )
    # Every model is validated and tested on the same weighted subsamples: all suspicious
    # events plus a share of legitimate ones, weighted back (see docs/models.md). The GBDT is
    # also scored on every test event, which checks the estimate.
    rng = np.random.default_rng(args.seed)
    split = SplitData(
        train=full.train,
        validation=full.validation.sample_legitimate(args.eval_legit_rate, rng),
        test=full.test.sample_legitimate(args.eval_legit_rate, rng),
        feature_names=full.feature_names,
        narrative_spec=full.narrative_spec,
    )
    print(f"scored subsamples: validation {len(split.validation):,}, test {len(split.test):,}")
    registry = Registry(args.out / "registry")
    model_settings = ModelSettings(registry_dir=registry.root, device="cpu")
    results_path = args.out / "quality.json"
    # A rerun keeps the rows (and registered models) of an earlier run with the same data, so
    # an interrupted run resumes instead of retraining everything.
    previous: dict[str, dict[str, Any]] = {}
    if results_path.is_file() and not args.fresh:
        saved = json.loads(results_path.read_text())
        if saved.get("narrative_version") == split.narrative_version:
            previous = {entry["model"]: entry for entry in saved["rows"]}
    rows: list[dict[str, Any]] = []

    def record(entry: dict[str, Any]) -> None:
        rows.append(entry)
        print(json.dumps(entry), flush=True)
        snapshot = {"rows": rows, "narrative_version": split.narrative_version}
        results_path.write_text(json.dumps(snapshot, indent=2))

    gbdt_names = (
        "GBDT (LightGBM, context features)",
        "GBDT, every test event (checks the subsample)",
    )
    if all(name in previous for name in gbdt_names):
        for name in gbdt_names:
            record(previous[name])
    else:
        gbdt = train_gbdt(
            split.train.features,
            split.train.labels,
            split.validation.features,
            split.validation.labels,
            feature_names=split.feature_names,
            valid_weights=split.validation.weights,
            seed=args.seed,
        )
        tic = time.perf_counter()
        full_test_scores = gbdt.predict(full.test.features)
        rate = len(full.test) / (time.perf_counter() - tic)
        for name, data, scores in (
            (gbdt_names[0], split.test, gbdt.predict(split.test.features)),
            (gbdt_names[1], full.test, full_test_scores),
        ):
            report = evaluate(
                scores,
                data.typologies,
                alert_budget=TARGETS.alert_rate,
                target_precision=TARGETS.precision,
                weights=data.weights,
            )
            record(row(name, report, gbdt.train_seconds, rate, iterations=gbdt.best_iteration))
    gbdt_rate = rows[0]["narratives_per_s"]

    models: dict[str, tuple[LoadedModel, float]] = {}

    def transformer(label: str, config: Any, **options: Any) -> None:
        if label in previous:
            record(previous[label])
            loaded = load_model(model_settings, previous[label]["version"])
        else:
            run = train_and_register(split, config, registry, targets=TARGETS, **options)
            record(transformer_row(label, run, split))
            loaded = run.model
        models[label] = (loaded, rows[-1]["average_precision"])

    student: dict[str, Any] = {"seed": args.seed, "cpu_threads": args.threads}
    if args.student_steps:
        student["max_steps"] = args.student_steps
    text_only, hybrid_name = "student 2L/128 text-only", "student 2L/128 hybrid"
    for name, hybrid in ((text_only, False), (hybrid_name, True)):
        tag = name.split()[-1]
        transformer(
            name,
            preset("student", hybrid=hybrid, **student),
            name=tag,
            run_dir=args.out / "runs" / tag,
        )
    hybrid = models[hybrid_name][1] >= models[text_only][1]
    kind = "hybrid" if hybrid else "text-only"

    if not args.skip_minilm:
        overrides: dict[str, Any] = {
            "seed": args.seed,
            "hybrid": hybrid,
            "cpu_threads": args.threads,
        }
        if args.minilm_steps:
            overrides["max_steps"] = args.minilm_steps
        minilm_name = f"MiniLM-L6 fine-tuned ({kind})"
        transformer(
            minilm_name, preset("minilm", **overrides), run_dir=args.out / "runs" / "minilm"
        )
        teacher = models[minilm_name][0]
        # The teacher scores each training row the student sees, once (~60/s).
        transformer(
            f"student 2L/128 {kind}, distilled from MiniLM",
            preset("student", hybrid=hybrid, **student),
            name="distilled",
            teacher=teacher,
            parent_version=teacher.version,
            run_dir=args.out / "runs" / "distilled",
        )

    # Dynamic int8 for each Transformer: worth keeping only if AP stays within 1 % relative.
    for name, (loaded, average_precision) in list(models.items()):
        if f"{name} int8" in previous:
            record(previous[f"{name} int8"])
            continue
        quantized = replace(loaded, model=quantize_int8(loaded.model), quantized=True)
        report = evaluate_model(quantized, split.test, targets=TARGETS)
        drop = 1 - report.average_precision / average_precision
        record(
            row(
                f"{name} int8",
                report,
                0.0,
                inference_rate(quantized, split),
                relative_ap_drop=round(drop, 4),
                within_1_percent=bool(drop <= 0.01),
            )
        )

    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    print_tables(rows, gbdt_rate)
    summary = {
        "rows": rows,
        "narrative_version": split.narrative_version,
        "gbdt_events_per_s": gbdt_rate,
        "split": full.data_window(),
        "test_events": len(full.test),
        "test_prevalence": float(full.test.labels.mean()),
    }
    results_path.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
