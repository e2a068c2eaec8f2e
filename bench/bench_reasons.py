"""Alert reasons on the demo bank: how often the top reason only names the event type.

    .venv/bin/python -m bench.bench_reasons            # a few minutes on 2 idle cores

The demo's setting (`riskstream demo`): a first model trained on a bank without card testing
(the `tiny` preset, 2 % alert budget), then the demo's streamed bank - card testing new,
prevalence 2 % - turned into narratives with the real context store and scored. For every
alert (score at or above the model's threshold) the reasons are computed by clause occlusion
(`models.reasons.explain`) three ways:

* ``occlusion, every clause``: every clause may be a reason (the code before this bench);
* ``event type excluded``: the event-type clause stays in every variant and is never ranked
  (``DESCRIPTIVE_CLAUSES``, the code now);
* ``event type and amount level excluded``: also the absolute amount level.

Figures: the share of alerts whose top reason is the event-type clause, the share whose top
reason is the amount level, the share left without any reason, the mean number of reasons,
and the top reasons' clause ids. The reference, measured in the same run, is the first
variant. Results: ``bench/results/reasons.json``; a Markdown table to stdout. The redis-server
is started by the script (127.0.0.1, a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from bench.bench_feedback_loop import machine
from models.dataset import read_events, read_labels, read_truth
from models.examples import NarrativeSet
from models.inference import LoadedModel, load_model
from models.reasons import explain
from models.registry import Registry
from models.settings import ModelSettings
from models.train_config import preset
from models.workflow import Targets, train_and_register
from schemas.narrative import NarrativeSpec, build_narrative
from stream.datasets import load_split, replay_contexts
from stream.devenv.process import free_ports
from stream.devenv.redis_server import RedisServer, ensure_redis_server_binary
from stream.settings import ContextSettings, Settings

RESULTS = Path("bench/results/reasons.json")
VARIANTS: dict[str, frozenset[str]] = {
    "occlusion, every clause": frozenset(),
    "event type excluded": frozenset({"event"}),
    "event type and amount level excluded": frozenset({"event", "amount_level"}),
}
CHUNK = 64


@dataclass(frozen=True)
class _Clause:
    id: str
    text: str


@dataclass(frozen=True)
class _Narrative:
    text: str
    clauses: tuple[_Clause, ...]


def simulate(out: Path, *args: str) -> Path:
    if (out / "events.jsonl").is_file():
        print(f"reusing simulation in {out}")
        return out
    command = [sys.executable, "-m", "stream.cli", "simulate", "--out", str(out), *args]
    print("$", " ".join(["riskstream", *command[3:]]), flush=True)
    subprocess.run([*command, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return out


def first_model(sim: Path, settings: Settings) -> str:
    registry = Registry(settings.model.registry_dir)
    champion = registry.champion()
    if champion is not None:
        print(f"reusing model {champion}")
        return champion
    run = train_and_register(
        load_split(sim, settings),
        preset("tiny", seed=7),
        registry,
        targets=Targets(alert_rate=0.02),
        name="demo-first",
        progress=True,
    )
    assert run.version is not None
    registry.promote(run.version, reason="bench_reasons")
    return run.version


def narratives_as_scored(sim: Path, settings: Settings, model: LoadedModel) -> NarrativeSet:
    """The bank's events through the real context store (labels applied as they become
    known), narrated with the model's own spec - what the scorer would give it."""
    events = read_events(sim / "events.jsonl")
    truth = read_truth(sim / "truth.jsonl")
    contexts = replay_contexts(events, read_labels(sim / "labels.jsonl"), settings)
    spec = NarrativeSpec.from_json(orjson.dumps(model.narrative_spec))
    built = [
        build_narrative(e, c.features, spec, c.story)
        for e, c in tqdm(zip(events, contexts, strict=True), total=len(events), desc="narrate")
    ]
    return NarrativeSet(
        event_ids=[e.event_id for e in events],
        days=[e.event_time.date() for e in events],
        texts=[b.text for b in built],
        clauses=[[(c.id, c.text) for c in b.clauses] for b in built],
        features=np.asarray([b.features for b in built], dtype=np.float32),
        typologies=[truth[e.event_id] for e in events],
    )


def alerts_of(model: LoadedModel, part: NarrativeSet) -> list[int]:
    scores = np.concatenate(
        [
            model.predict_batch(part.texts[i : i + 512], part.features[i : i + 512]).scores
            for i in tqdm(range(0, len(part), 512), desc="scoring", unit="chunk")
        ]
    )
    return [int(i) for i in np.flatnonzero(scores >= model.alert_threshold)]


def measure(model: LoadedModel, part: NarrativeSet, rows: list[int]) -> dict[str, Any]:
    narratives = [
        _Narrative(part.texts[r], tuple(_Clause(c, t) for c, t in part.clauses[r])) for r in rows
    ]
    out: dict[str, Any] = {}
    for name, descriptive in VARIANTS.items():
        started = time.perf_counter()
        reasons = []
        for i in tqdm(range(0, len(rows), CHUNK), desc=name, unit="chunk"):
            reasons += explain(
                model,
                narratives[i : i + CHUNK],
                part.features[rows[i : i + CHUNK]],
                top_k=3,
                descriptive=descriptive,
            )
        seconds = time.perf_counter() - started
        tops = Counter(found[0].clause for found in reasons if found)
        n = len(reasons)
        out[name] = {
            "alerts": n,
            "top_is_event_type": round(tops.get("event", 0) / n, 4),
            "top_is_amount_level": round(tops.get("amount_level", 0) / n, 4),
            "without_reason": round(sum(1 for found in reasons if not found) / n, 4),
            "mean_reasons": round(sum(len(found) for found in reasons) / n, 3),
            "top_reasons": dict(tops.most_common()),
            "seconds": round(seconds, 1),
            "examples": [
                {"narrative": narratives[k].text, "reasons": [r.text for r in reasons[k]]}
                for k in range(min(3, n))
            ],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".riskstream/bench/reasons")
    args = parser.parse_args()
    train_sim = simulate(
        args.out / "training", "--customers", "600", "--days", "30", "--start-date",
        "2026-01-01", "--seed", "7", "--prevalence", "0.02", "--exclude", "card_testing",
    )  # fmt: skip
    stream_sim = simulate(
        args.out / "traffic", "--customers", "1500", "--days", "10", "--start-date",
        "2026-03-01", "--seed", "11", "--prevalence", "0.02", "--mix", "card_testing=3",
        "--warmup-days", "1",
    )  # fmt: skip
    (port,) = free_ports(1)
    with (
        tempfile.TemporaryDirectory(prefix="bench-reasons-") as tmp,
        RedisServer(port, Path(tmp), binary=ensure_redis_server_binary()) as redis,
    ):
        settings = Settings(
            home=args.out,
            redis=redis.redis_settings(),
            context=ContextSettings(namespace="bench-reasons"),
            model=ModelSettings(registry_dir=args.out / "registry"),
        )
        version = first_model(train_sim, settings)
        model = load_model(settings.model, version)
        part = narratives_as_scored(stream_sim, settings, model)
    rows = alerts_of(model, part)
    print(f"{len(rows)} alerts of {len(part)} events (threshold {model.alert_threshold:.4f})")
    variants = measure(model, part, rows)
    result = {
        "command": "python -m bench.bench_reasons",
        "model": version,
        "events": len(part),
        "alerts": len(rows),
        "machine": machine(),
        "reference": "occlusion, every clause",
        "variants": variants,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| reasons | top = event type | top = amount level | no reason | mean reasons |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, v in variants.items():
        print(
            f"| {name} | {v['top_is_event_type']:.1%} | {v['top_is_amount_level']:.1%} | "
            f"{v['without_reason']:.1%} | {v['mean_reasons']:.2f} |"
        )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
