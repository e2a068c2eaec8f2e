"""What the Transformer knows that the trees do not: the quality table's registered models
blended with the GBDT, on the table's test subsample.

    .venv/bin/python -m bench.bench_quality_blend --threads 1 --out OUT

``OUT`` is a ``bench_quality --out`` directory. For every registered seed of the CPU default
(and of its text-only ablation, when there), the GBDT is trained at the same seed and the two
scores are blended in log-odds, ``w x student + (1 - w) x trees``, for w from 0 (the trees
alone) to 1 (the student alone). If the student's text carried evidence the trees' features
miss, some blend would rank above the trees alone by more than the trees gain from a second
seed of themselves - the control this reports beside it (two GBDT seeds averaged the same
way). The best blend bounds what any model that adds this student's reading to the trees can
reach on this bank. Writes ``bench/results/quality_blend.json`` and a PNG of AP against w.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.bench_quality import DEFAULT, add_table_options, dataset, saved_rows, scored, table_split
from bench.machine import run_facts
from models.gbdt import train_gbdt
from models.inference import configure_cpu_threads, load_model
from models.settings import ModelSettings

RESULTS = Path(__file__).parent / "results" / "quality_blend.json"
TEXT_ONLY = f"{DEFAULT} without the numeric path (text only)"
WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))
_EPSILON = 1e-7


def log_odds(probabilities: NDArray[np.floating]) -> NDArray[np.float64]:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    return np.log(p / (1 - p))


def blend(
    trees: NDArray[np.floating], student: NDArray[np.floating], weight: float
) -> NDArray[np.float64]:
    """The two scores mixed in log-odds, back as a probability: ``weight`` the student's
    share (0: the trees' ranking exactly, 1: the student's)."""
    mixed = weight * log_odds(student) + (1 - weight) * log_odds(trees)
    return 1.0 / (1.0 + np.exp(-mixed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    add_table_options(parser)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_cpu_threads(args.threads)

    full = dataset(next(args.out.glob("sim-*")))
    split = table_split(full, args.eval_legit_rate, args.data_seed)
    saved = saved_rows(args.out, full)
    settings = ModelSettings(registry_dir=args.out / "registry", device="cpu")
    test = split.test

    runs = {row: saved["rows"].get(row, []) for row in (DEFAULT, TEXT_ONLY)}
    seeds = sorted({run["seed"] for rows in runs.values() for run in rows})
    trees: dict[int, NDArray[np.float64]] = {}
    for seed in [*seeds, max(seeds) + 1]:  # one more: every seed's control has a partner
        print(f"GBDT seed {seed}", flush=True)
        trees[seed] = train_gbdt(
            split.train.features, split.train.labels, split.validation.features,
            split.validation.labels, feature_names=split.feature_names,
            valid_weights=split.validation.weights, seed=seed, threads=args.threads,
        ).predict(test.features)  # fmt: skip

    figures: dict[str, list[dict[str, Any]]] = {}
    for row, registered in runs.items():
        for run in registered:
            seed = run["seed"]
            model = load_model(settings, run["version"])
            student = model.predict_batch(test.texts, test.features if model.hybrid else None)
            curve = {w: scored(blend(trees[seed], student.scores, w), test) for w in WEIGHTS}
            best = max(WEIGHTS, key=lambda w: curve[w]["ap"])
            entry = {
                "seed": seed,
                "trees": curve[0.0],
                "student": curve[1.0],
                "best_weight": best,
                "best_blend": curve[best],
                "two_tree_seeds": scored(blend(trees[seed], trees[seed + 1], 0.5), test),
                "ap_by_weight": {str(w): curve[w]["ap"] for w in WEIGHTS},
            }
            figures.setdefault(row, []).append(entry)
            print(json.dumps({"row": row, **entry}), flush=True)

    summary = {row: _summary(entries) for row, entries in figures.items()}
    result = {
        "what": "log-odds blends of the table's registered models with the GBDT at the same "
        "seed, on the table's test subsample; control: two GBDT seeds blended",
        **run_facts("bench.bench_quality_blend", threads=args.threads),
        "narrative_version": full.narrative_version,
        "summary": summary,
        "rows": figures,
    }
    print(json.dumps(summary, indent=2))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results} and {_plot(figures, args.results.with_suffix('.png'))}")


def _mean(entries: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for entry in entries:
        value: Any = entry
        for key in keys:
            value = value[key]
        values.append(float(value))
    return round(float(np.mean(values)), 4)


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds; the blend at each weight is averaged before the best is chosen,
    so the best weight is one weight for every seed, not each seed's luckiest."""
    by_weight = {str(w): _mean(entries, "ap_by_weight", str(w)) for w in WEIGHTS}
    best = max(by_weight, key=lambda w: by_weight[w])
    return {
        "seeds": [e["seed"] for e in entries],
        "trees_ap": _mean(entries, "trees", "ap"),
        "student_ap": _mean(entries, "student", "ap"),
        "two_tree_seeds_ap": _mean(entries, "two_tree_seeds", "ap"),
        "best_weight": float(best),
        "best_blend_ap": by_weight[best],
        "best_blend_to_trees": round(by_weight[best] / _mean(entries, "trees", "ap"), 4),
        "ap_by_weight": by_weight,
    }


def _plot(figures: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (row, entries), colour in zip(figures.items(), ("tab:blue", "tab:orange"), strict=False):
        for entry in entries:
            aps = [entry["ap_by_weight"][str(w)] for w in WEIGHTS]
            axes.plot(WEIGHTS, aps, color=colour, lw=1.2, alpha=0.8,
                      label=f"{row}, seed {entry['seed']}")  # fmt: skip
            axes.scatter([0.0], [entry["two_tree_seeds"]["ap"]], color="black", marker="x")
    axes.scatter([], [], color="black", marker="x", label="two GBDT seeds blended")
    axes.set(xlabel="student's share of the log-odds (0: the GBDT alone)", ylabel="test AP")
    axes.set_title("Blends of the student with the GBDT at the same seed")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
