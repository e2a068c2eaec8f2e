"""Model-only throughput: narratives scored per second at batch sizes 1, 32 and 256 on CPU, for
the compact student and MiniLM-L6, fp32 and dynamic int8 — the model limit the streaming
pipeline is measured against.

    .venv/bin/python -m bench.bench_model            # full run, ~2–3 minutes on 2 cores
    .venv/bin/python -m bench.bench_model --quick    # fewer narratives per point
    .venv/bin/python -m bench.bench_model --quick --only hybrid --skip-minilm  # the side paths

Timing covers what ``LoadedModel.predict_batch`` does per call: tokenization, length bucketing,
padding and the forward pass. Weights are untrained (speed does not depend on their values);
narratives come from the narrative builder on simulated events when ``--narratives FILE`` (one
per line) is given, otherwise from a generator of sentences in the builder's style of the same
length (~55 MiniLM tokens).

Because absolute speeds drift on shared machines, every figure is also given as a ratio to a
reference measured beside it in the same run: a fixed fp32 matmul (256×384 by 384×384, the
size of one MiniLM projection on a full batch) repeated for half a second, in matmuls/s. Each
point is the best of three windows, each next to its own reference window (the reference is
also the best of its three): other jobs on a shared machine only ever slow a window down, so
the best window is the closest to the machine's real speed, for the model and the reference
alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbones import StudentSize, load_tokenizer
from models.classifier import RiskClassifier, _each_path_hidden
from models.inference import LoadedModel, configure_cpu_threads, from_classifier, quantize_int8
from models.thresholds import calibrate
from models.train import build_model
from models.train_config import TrainConfig, preset
from schemas.features import FEATURE_NAMES

_CHANNELS = [
    "a card payment at a grocery merchant",
    "an online purchase at an electronics merchant",
    "a cash deposit at a branch",
    "an outbound wire to a beneficiary account",
    "an inbound peer to peer transfer",
    "a withdrawal at an automated teller machine",
]
_CLAUSES = [
    "the amount is far above this customer's usual",
    "the amount is typical for this customer",
    "the amount is just under the reporting threshold",
    "the counterparty was first seen this week",
    "the device has never been used by this customer",
    "there were many payments in the last hour at many different merchants",
    "the country has never been used by this customer",
    "money arrived and left again within a few hours",
    "the account had been silent for several months",
    "several similar cash deposits were made this week",
    "the terminal has seen chargebacks from other customers recently",
]


def synthetic_narratives(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        clauses = rng.sample(_CLAUSES, k=rng.randint(3, 5))
        out.append(f"a retail customer made {rng.choice(_CHANNELS)}; " + "; ".join(clauses) + ".")
    return out


def reference_matmuls_per_second(seconds: float = 1.0) -> float:
    a, b = torch.randn(256, 384), torch.randn(384, 384)
    with torch.inference_mode():
        for _ in range(20):
            a @ b
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(5):
                a @ b
            count += 5
    return count / (time.perf_counter() - started)


def throughput(
    score: Callable[[list[str]], object], narratives: list[str], batch: int, budget_s: float
) -> float:
    """Narratives/s of ``score`` called with ``batch`` narratives at a time."""
    score(narratives[:batch])  # warm-up: allocator, thread pool, tokenizer caches
    done, offset, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < budget_s or done < batch * 3:
        chunk = narratives[offset : offset + batch]
        if len(chunk) < batch:
            offset, chunk = 0, narratives[:batch]
        score(chunk)
        done += len(chunk)
        offset += batch
    return done / (time.perf_counter() - started)


def side_paths_ms(model: nn.Module, n_features: int, windows: int, batch: int = 32) -> float:
    """Milliseconds of the side paths alone on one CPU pass (``batch`` rows), best of
    ``windows`` windows of a second: the part of the model the fused paths change, timed
    apart from the encoder, whose time hides it in the narratives/s."""
    side_hidden = getattr(model, "side_hidden")  # noqa: B009 (an int8 copy is an nn.Module)
    scaled = torch.randn(batch, n_features)
    best = float("inf")
    with torch.inference_mode():
        side_hidden(scaled)
        for _ in range(windows):
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                side_hidden(scaled)
                calls += 1
            best = min(best, (time.perf_counter() - started) / calls * 1000)
    return best


def one_path_at_a_time(model: RiskClassifier) -> RiskClassifier:
    """``model`` running its side paths one after another, as before they were fused (for the
    comparison only: the same arithmetic, so the same scores)."""

    def side_hidden(
        self: RiskClassifier, scaled: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        return _each_path_hidden(self.side_paths(), scaled, dtype)

    # bound to the instance, so the copy quantize_int8 makes runs its own (int8) paths
    setattr(model, "side_hidden", types.MethodType(side_hidden, model))  # noqa: B010
    return model


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--narratives", type=Path, help="file of real narratives, one a line")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--only-minilm", action="store_true")
    parser.add_argument("--windows", type=int, default=3, help="timing windows per point")
    parser.add_argument("--only", help="only the models whose name contains this")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: physical cores)"
    )
    args = parser.parse_args()

    configure_cpu_threads(args.threads)
    narratives = (
        [line for line in args.narratives.read_text().splitlines() if line.strip()]
        if args.narratives
        else synthetic_narratives(2048)
    )
    budget = 2.0 if args.quick else 6.0
    thresholds = calibrate(np.linspace(0, 1, 10), np.arange(10) > 7)
    tokenizer = load_tokenizer()
    feature_names = list(FEATURE_NAMES)  # the side path reads what the default reads
    zeros = np.zeros((256, len(feature_names)), np.float32)

    tokens = [len(ids) for ids in tokenizer(narratives[:512])["input_ids"]]
    print(f"machine: {machine()}")
    print(f"narratives: {len(narratives)}, mean tokens {np.mean(tokens):.1f}")
    references: list[float] = []

    wide = StudentSize(layers=4, hidden=256, heads=4)
    variants: list[tuple[str, TrainConfig]] = []
    if not args.only_minilm:
        variants += [
            ("student 2L/128 text", TrainConfig(hybrid=False)),
            ("student 2L/128 hybrid", TrainConfig(hybrid=True)),
            # the CPU default's architecture: eight side paths, run fused (models/classifier.py)
            ("student 2L/128 hybrid, eight side paths", preset("student")),
            ("student 2L/128 hybrid, eight side paths one at a time", preset("student")),
            ("student 4L/256 text", TrainConfig(hybrid=False, student=wide)),
        ]
    if not args.skip_minilm:
        variants.append(("MiniLM-L6 text", TrainConfig(backbone="minilm", hybrid=False)))
    if args.only:
        variants = [(name, config) for name, config in variants if args.only in name]
    rows = []
    for name, config in variants:
        model = build_model(config, feature_names)
        if name.endswith("one at a time"):
            model = one_path_at_a_time(model)
        model.eval()
        for precision in ("fp32", "int8"):
            loaded = from_classifier(model, tokenizer, thresholds)
            if precision == "int8":
                loaded.model = quantize_int8(model)

            def score(texts: list[str], loaded: LoadedModel = loaded) -> object:
                return loaded.predict_batch(texts, zeros[: len(texts)] if loaded.hybrid else None)

            for batch in (1, 32, 256):
                # Best of three short windows, each next to its own reference: a window in
                # which another job grabbed the cores is discarded rather than averaged in.
                reference, rate = 0.0, 0.0
                for _ in range(args.windows):
                    reference = max(reference, reference_matmuls_per_second(0.5))
                    window = budget / args.windows * (0.5 if batch == 1 else 1)
                    rate = max(rate, throughput(score, narratives, batch, window))
                references.append(reference)
                row = {
                    "model": name,
                    "precision": precision,
                    "batch": batch,
                    "narratives_per_s": round(rate, 1),
                    "reference_matmuls_per_s": round(reference, 1),
                    "per_1k_reference_matmuls": round(rate / reference * 1000, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            if config.hybrid and config.backbone == "student":
                row = {
                    "model": name,
                    "precision": precision,
                    "side_paths_ms_per_32": round(
                        side_paths_ms(loaded.model, len(feature_names), args.windows), 3
                    ),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

    print(
        f"\nreference: median {np.median(references):,.0f} matmuls/s "
        f"(range {min(references):,.0f}–{max(references):,.0f})"
    )
    print("\n| model | precision | batch 1 | batch 32 | batch 256 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, _ in variants:
        for precision in ("fp32", "int8"):
            cells = [
                f"{r['narratives_per_s']:,.0f} ({r['per_1k_reference_matmuls']})"
                for r in rows
                if r["model"] == name and r["precision"] == precision and "batch" in r
            ]
            side = [r["side_paths_ms_per_32"] for r in rows if "side_paths_ms_per_32" in r
                    and r["model"] == name and r["precision"] == precision]  # fmt: skip
            note = f" (side paths alone: {side[0]} ms per pass of 32)" if side else ""
            print(f"| {name} | {precision} | " + " | ".join(cells) + " |" + note)
    if args.json:
        result = {"machine": machine(), "rows": rows}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
