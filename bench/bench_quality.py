"""The quality table: the GBDT baseline against the narrative Transformer on one simulated bank,
one time split, the same metrics, three seeds each, with ablations.

    .venv/bin/python -m bench.bench_quality --threads 1            # ~2-3 h on 2 busy cores
    .venv/bin/python -m bench.bench_quality --seeds 0 --no-ablations  # one seed, ~30 min
    # one process per core: the main rows, and beside them the ablations (then run the first
    # command again to summarise every row)
    .venv/bin/python -m bench.bench_quality --threads 1 --no-ablations &
    .venv/bin/python -m bench.bench_quality --threads 1 --ablations-only --ablation-seeds 0

Steps: simulate (``riskstream simulate``) -> dataset (the real ContextStore on a redis-server
this script starts on 127.0.0.1, then the narrative builder; Parquet cache reused on a rerun)
-> train on the first 60 % of days, early-stop and calibrate on the next 20 %, report on the
last 20 %. Every model is validated and tested on the same weighted subsamples (all
suspicious events + a share of legitimate ones, weighted back; see docs/models.md).

Rows (each seed trains a fresh model; a row reports the mean and the spread):

* ``GBDT``: LightGBM on every numeric feature the Transformer's side path reads - the context
  features, the counterparty risk and exposure, and the aggregates of the story - the fair
  baseline; ``GBDT without the new features`` drops what issues 14 and 15 added (features f1).
* ``student hybrid`` (the CPU default): the 2-layer/128 student reading narrative n2 (event
  clauses, the story, the customer's reference) with the piecewise-linear numeric side path;
  ablations drop the story (clauses and story features), the reference, the numeric path
  (text only), or the new counterparty-risk clauses and features;
* ``student hybrid int8``: the default dynamically quantised (first seed).

Also measured: the default's model-only throughput at batch 256 against LightGBM's in the same
run, and memo robustness - the test days' suspicious events re-scored with their references
swapped for benign ones ("rent", "refund", "invoice 2231"), recall at the budget threshold.

Writes ``<out>/quality.json`` (every row, resumable) and ``bench/results/quality.json``:
``{"gbdt": ROW, "default": ROW, "models": {ROW: {"ap", "ap_std", "roc_auc",
"recall_at_budget", "per_typology_recall"}}, ...}``, and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluate import EvalReport, evaluate
from models.examples import NarrativeSet, SplitData
from models.gbdt import train_gbdt
from models.inference import LoadedModel, configure_cpu_threads, load_model, quantize_int8
from models.registry import Registry
from models.settings import ModelSettings
from models.train_config import preset
from models.workflow import Targets, evaluate_model, train_and_register
from schemas.features import FEATURE_NAMES, FEATURE_SETS
from schemas.narrative.builder import SEPARATOR
from schemas.narrative.story import memo_text

TARGETS = Targets("alert_rate", 0.01, 0.5)
RESULTS = Path(__file__).parent / "results" / "quality.json"
GBDT, GBDT_F1 = "GBDT", "GBDT without the new features"
DEFAULT = "student hybrid"
BENIGN_MEMOS = ("rent", "refund", "invoice 2231")
NEW_RISK_CLAUSES = ("cp_confirmed_fraud", "cp_fraud_recency", "compromised_exposure")
NEW_RISK_FEATURES = tuple(
    n for n in FEATURE_NAMES if n.startswith(("cp_mature_", "cp_days_since")) or "compromised" in n
)
STORY_FEATURES = tuple(n for n in FEATURE_NAMES if n.startswith("story_"))


# --- data ------------------------------------------------------------------------------------


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
    from stream.datasets import current_split, load_split
    from stream.devenv.process import free_ports
    from stream.devenv.redis_server import RedisServer
    from stream.settings import load_settings

    cached = current_split(sim_dir)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory() as scratch:
        server = RedisServer(port=free_ports()[0], data_dir=Path(scratch))
        with server:
            settings = load_settings(redis=server.redis_settings())
            return load_split(sim_dir, settings)


def ablate(
    split: SplitData, drop_clause: Callable[[str], bool], drop_features: Sequence[str]
) -> SplitData:
    """The split with some clauses left out of every narrative and some features out of
    every vector: what a model without that part of the data would read."""
    keep = [i for i, n in enumerate(split.feature_names) if n not in set(drop_features)]

    def part(data: NarrativeSet) -> NarrativeSet:
        clauses = [[(c, t) for c, t in row if not drop_clause(c)] for row in data.clauses]
        return replace(
            data,
            clauses=clauses,
            texts=[SEPARATOR.join(t for _, t in row) for row in clauses],
            features=data.features[:, keep],
        )

    return SplitData(
        train=part(split.train),
        validation=part(split.validation),
        test=part(split.test),
        feature_names=tuple(split.feature_names[i] for i in keep),
        narrative_spec=split.narrative_spec,
    )


def with_memo(data: NarrativeSet, rows: Sequence[int], memos: Sequence[str]) -> NarrativeSet:
    """``data`` with the reference of each of ``rows`` replaced by (or, without one, given)
    a benign one, in turn."""
    texts, clauses = list(data.texts), [list(c) for c in data.clauses]
    for k, row in enumerate(rows):
        kept = [(c, t) for c, t in clauses[row] if c != "memo"]
        kept.append(("memo", memo_text(memos[k % len(memos)])))
        clauses[row] = kept
        texts[row] = SEPARATOR.join(t for _, t in kept)
    return replace(data, texts=texts, clauses=clauses)


def add_table_options(parser: argparse.ArgumentParser) -> None:
    """The options every bench over a quality run shares: its threads, and the subsamples the
    table drew (``table_split``: the same values draw the same events)."""
    parser.add_argument("--threads", type=int, default=None, help="torch/LightGBM threads")
    parser.add_argument("--eval-legit-rate", type=float, default=0.1)
    parser.add_argument("--data-seed", type=int, default=0)


def saved_rows(out: Path, full: SplitData) -> dict[str, Any]:
    """``out``'s quality.json - every row's registered runs - refused unless its models were
    trained on ``full``'s bank."""
    saved: dict[str, Any] = json.loads((out / "quality.json").read_text())
    if saved["narrative_version"] != full.narrative_version:
        raise SystemExit(f"{out} was trained on another bank than the one given")
    return saved


def table_split(full: SplitData, eval_legit_rate: float, data_seed: int) -> SplitData:
    """The table's split: all training days, and validation and test subsamples of every
    suspicious event plus an ``eval_legit_rate`` share of legitimate ones (weighted back),
    drawn in that order from ``data_seed`` - the benches that read the table's seeds draw the
    same subsamples through this."""
    rng = np.random.default_rng(data_seed)
    return SplitData(
        train=full.train,
        validation=full.validation.sample_legitimate(eval_legit_rate, rng),
        test=full.test.sample_legitimate(eval_legit_rate, rng),
        feature_names=full.feature_names,
        narrative_spec=full.narrative_spec,
    )


# --- rows ------------------------------------------------------------------------------------


def scored(scores: np.ndarray, data: NarrativeSet) -> dict[str, float]:
    """AP, recall at the budget and ROC-AUC of ``scores`` on ``data``, rounded for a report."""
    report = evaluate(
        scores,
        data.typologies,
        alert_budget=TARGETS.alert_rate,
        target_precision=TARGETS.precision,
        weights=data.weights,
    )
    return {
        "ap": round(report.average_precision, 4),
        "recall_at_budget": round(report.recall_at_budget, 4),
        "roc_auc": round(report.roc_auc, 4),
    }


def metrics(report: EvalReport) -> dict[str, Any]:
    return {
        "ap": report.average_precision,
        "roc_auc": report.roc_auc,
        "recall_at_budget": report.recall_at_budget,
        "recall_at_precision": report.recall_at_precision,
        "per_typology_recall": report.per_typology_recall,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds (per-typology recall too) and the spread of AP."""
    aps = [r["ap"] for r in runs]
    typologies = sorted({t for r in runs for t in r["per_typology_recall"]})
    return {
        "ap": round(float(np.mean(aps)), 4),
        "ap_std": round(float(np.std(aps)), 4),
        "roc_auc": round(float(np.mean([r["roc_auc"] for r in runs])), 4),
        "recall_at_budget": round(float(np.mean([r["recall_at_budget"] for r in runs])), 4),
        "recall_at_precision": round(float(np.mean([r["recall_at_precision"] for r in runs])), 4),
        "per_typology_recall": {
            t: round(float(np.mean([r["per_typology_recall"].get(t, 0.0) for r in runs])), 3)
            for t in typologies
        },
        "seeds": [r["seed"] for r in runs],
        "runs": runs,
    }


def inference_rate(model: LoadedModel, data: NarrativeSet, n: int = 2048) -> float:
    """Narratives per second through ``predict_batch`` at batch 256 (after a warm-up)."""
    texts = data.texts[:n]
    features = data.features[:n] if model.hybrid else None
    model.predict_batch(texts[:256], features[:256] if features is not None else None)
    started = time.perf_counter()
    for start in range(0, len(texts), 256):
        part = features[start : start + 256] if features is not None else None
        model.predict_batch(texts[start : start + 256], part)
    return len(texts) / (time.perf_counter() - started)


def memo_robustness(model: LoadedModel, test: NarrativeSet) -> dict[str, Any]:
    """Recall at the budget threshold of the test days' suspicious events, as they are and with
    every one's reference swapped for (or given) a benign one."""
    original = model.predict_batch(test.texts, test.features if model.hybrid else None).scores
    weights = test.row_weights()
    order = np.argsort(-original, kind="stable")
    cut = np.searchsorted(np.cumsum(weights[order]), TARGETS.alert_rate * weights.sum())
    threshold = float(original[order][min(cut, len(order) - 1)])
    rows = np.flatnonzero(test.labels)
    swapped_set = with_memo(test, rows.tolist(), BENIGN_MEMOS).subset(rows)
    swapped = model.predict_batch(
        swapped_set.texts, swapped_set.features if model.hybrid else None
    ).scores
    before = float(np.mean(original[rows] >= threshold))
    after = float(np.mean(swapped >= threshold))
    had_memo = sum(any(c == "memo" for c, _ in test.clauses[r]) for r in rows)
    return {
        "suspicious_events": len(rows),
        "with_a_reference": int(had_memo),
        "recall_before": round(before, 4),
        "recall_swapped": round(after, 4),
        "relative_loss": round(1 - after / before, 4) if before else 0.0,
    }


class Bench:
    def __init__(self, out: Path, split: SplitData, full_test: NarrativeSet, args: Any) -> None:
        self.out, self.split, self.full_test, self.args = out, split, full_test, args
        self.registry = Registry(out / "registry")
        self.model_settings = ModelSettings(registry_dir=self.registry.root, device="cpu")
        self.path = out / "quality.json"
        self.state: dict[str, Any] = {"narrative_version": split.narrative_version, "rows": {}}
        if self.path.is_file() and not args.fresh:
            saved = json.loads(self.path.read_text())
            if saved.get("narrative_version") == split.narrative_version:
                self.state = saved

    def save(self) -> None:
        self.path.write_text(json.dumps(self.state, indent=2))

    def runs(self, row: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.state["rows"].setdefault(row, [])
        return runs

    def gbdt(self, row: str, names: Sequence[str], seed: int) -> None:
        if any(r["seed"] == seed for r in self.runs(row)):
            return
        idx = [FEATURE_NAMES.index(n) for n in names]
        split = self.split
        model = train_gbdt(
            split.train.features[:, idx],
            split.train.labels,
            split.validation.features[:, idx],
            split.validation.labels,
            feature_names=tuple(names),
            valid_weights=split.validation.weights,
            seed=seed,
            threads=self.args.threads,
        )
        scores = model.predict(split.test.features[:, idx])
        report = evaluate(
            scores,
            split.test.typologies,
            alert_budget=TARGETS.alert_rate,
            target_precision=TARGETS.precision,
            weights=split.test.weights,
        )
        started = time.perf_counter()
        model.predict(self.full_test.features[:, idx])
        rate = len(self.full_test) / (time.perf_counter() - started)
        entry = {"seed": seed, **metrics(report), "train_seconds": round(model.train_seconds, 1)}
        entry["events_per_s"] = round(rate, 1)
        entry["trees"] = model.best_iteration
        self.record(row, entry)

    def transformer(self, row: str, split: SplitData, seed: int, **config: Any) -> LoadedModel:
        for entry in self.runs(row):
            if entry["seed"] == seed:
                return load_model(self.model_settings, entry["version"])
        options: dict[str, Any] = {"seed": seed, "cpu_threads": self.args.threads, **config}
        if self.args.student_steps:
            options["max_steps"] = self.args.student_steps
        tag = row.replace(" ", "-") + f"-s{seed}"
        run = train_and_register(
            split,
            preset("student", **options),
            self.registry,
            targets=TARGETS,
            name=tag,
            run_dir=self.out / "runs" / tag,
        )
        entry = {"seed": seed, **metrics(run.report), "version": run.version}
        entry["train_seconds"] = round(run.result.seconds, 1)
        entry["best_step"] = run.result.best_step
        entry["narratives_per_s"] = round(inference_rate(run.model, split.test), 1)
        if row == DEFAULT:
            entry["memo_robustness"] = memo_robustness(run.model, split.test)
        self.record(row, entry)
        return run.model

    def record(self, row: str, entry: dict[str, Any]) -> None:
        """Add one seed's entry; several processes may share ``out`` (one per core, different
        rows or seeds), so the file is re-read and merged under a lock."""
        print(json.dumps({"row": row, **entry}), flush=True)
        with (self.out / "quality.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.is_file():
                saved = json.loads(self.path.read_text())
                if saved.get("narrative_version") == self.state["narrative_version"]:
                    self.state = saved
            runs = self.runs(row)
            runs[:] = [r for r in runs if r["seed"] != entry["seed"]] + [entry]
            self.save()


# --- tables ------------------------------------------------------------------------------------


def print_tables(models: dict[str, dict[str, Any]], extra: dict[str, Any]) -> None:
    print(f"\nreference: GBDT predicts {extra['gbdt_events_per_s']:,.0f} events/s here\n")
    print("| model | seeds | AP (mean ± sd) | ROC-AUC | recall@1% | recall@P50 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, m in models.items():
        print(
            f"| {name} | {len(m['seeds'])} | {m['ap']:.4f} ± {m['ap_std']:.4f} | "
            f"{m['roc_auc']:.4f} | {m['recall_at_budget']:.3f} | {m['recall_at_precision']:.3f} |"
        )
    typologies = sorted({t for m in models.values() for t in m["per_typology_recall"]})
    print("\nper-typology recall at the 1 % alert budget (mean over seeds):\n")
    print("| model | " + " | ".join(typologies) + " |")
    print("| --- |" + " ---: |" * len(typologies))
    for name, m in models.items():
        cells = [f"{m['per_typology_recall'].get(t, float('nan')):.2f}" for t in typologies]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".riskstream/bench/quality"))
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument(
        "--ablations-only",
        action="store_true",
        help="train the ablations only (a second process beside one running the main rows)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an earlier run's rows")
    parser.add_argument("--student-steps", type=int, default=None)
    add_table_options(parser)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    configure_cpu_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sim_dir = args.out / f"sim-{args.customers}x{args.days}-s{args.data_seed}"
    started = time.perf_counter()
    simulate(sim_dir, args.customers, args.days, args.data_seed)
    full = dataset(sim_dir)
    print(f"dataset ready in {time.perf_counter() - started:.0f}s:", flush=True)
    for name, window in full.data_window().items():
        part = getattr(full, name)
        print(f"  {name:<10} {window[0]}..{window[1]} {len(part):>8,} events, "
              f"{int(part.labels.sum()):>5} suspicious")  # fmt: skip
    split = table_split(full, args.eval_legit_rate, args.data_seed)
    print(f"scored subsamples: validation {len(split.validation):,}, test {len(split.test):,}")
    bench = Bench(args.out, split, full.test, args)

    for seed in [] if args.ablations_only else args.seeds:
        bench.gbdt(GBDT, FEATURE_NAMES, seed)
        bench.gbdt(GBDT_F1, FEATURE_SETS["f1"], seed)
        default = bench.transformer(DEFAULT, split, seed)
        if seed == args.seeds[0] and not bench.runs(f"{DEFAULT} int8"):
            quantized = replace(default, model=quantize_int8(default.model), quantized=True)
            report = evaluate_model(quantized, split.test, targets=TARGETS)
            bench.record(
                f"{DEFAULT} int8",
                {"seed": seed, **metrics(report),
                 "narratives_per_s": round(inference_rate(quantized, split.test), 1)},
            )  # fmt: skip
    if not args.no_ablations:
        ablations: dict[str, tuple[SplitData, dict[str, Any]]] = {
            f"{DEFAULT} without the story": (
                ablate(split, lambda c: c.startswith("story_"), STORY_FEATURES),
                {},
            ),
            f"{DEFAULT} without the reference": (ablate(split, lambda c: c == "memo", ()), {}),
            f"{DEFAULT} without the numeric path (text only)": (split, {"hybrid": False}),
            f"{DEFAULT} without the new counterparty risk": (
                ablate(split, lambda c: c in NEW_RISK_CLAUSES, NEW_RISK_FEATURES),
                {},
            ),
        }
        for seed in args.ablation_seeds or args.seeds:
            for name, (data, config) in ablations.items():
                bench.transformer(name, data, seed, **config)

    if args.ablations_only:
        return  # the process running the main rows summarises
    models = {name: summarise(runs) for name, runs in bench.state["rows"].items() if runs}
    gbdt_rate = float(np.mean([r["events_per_s"] for r in bench.runs(GBDT)]))
    default_rate = float(np.mean([r["narratives_per_s"] for r in bench.runs(DEFAULT)]))
    extra = {
        "gbdt_events_per_s": round(gbdt_rate, 1),
        "default_narratives_per_s": round(default_rate, 1),
        "default_to_gbdt_ap": round(models[DEFAULT]["ap"] / models[GBDT]["ap"], 4),
        "memo_robustness": [r["memo_robustness"] for r in bench.runs(DEFAULT)],
        "narrative_version": split.narrative_version,
        "split": full.data_window(),
        "test_events": len(full.test),
        "test_suspicious": int(full.test.labels.sum()),
        "scored_test_subsample": len(split.test),
        "seconds": round(time.perf_counter() - started),
    }
    print_tables(models, extra)
    print(json.dumps(extra, indent=2))
    result = {
        "gbdt": GBDT,
        "default": DEFAULT,
        "models": {name: {k: v for k, v in m.items() if k != "runs"} for name, m in models.items()},
        **extra,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
