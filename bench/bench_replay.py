"""Replay throughput: events per second through a replay, against the model alone on the very
same narratives, measured in the same run.

    riskstream dev up      # a broker and Redis (export the two variables it prints)
    .venv/bin/python -m bench.bench_replay                      # simulated traffic
    .venv/bin/python -m bench.bench_replay --data DIR --batch-size 256 --json var/replay.json

Needs a model in the registry (``settings.model.registry_dir``; the champion, or
``--model-version``).

* ``replay``: ``stream.replay.run.replay`` of ``events.jsonl`` as fast as possible, end to end:
  reading the file, context updates in Redis, narratives, the model, occlusion explanations of
  the alerts, alerts produced and acknowledged by the broker, every score to Parquet.
* ``model only`` (the reference): the same model's ``predict_batch`` on the narratives and
  features that replay scored (read back from its kept namespace), in batches of the same
  size - what the machine can score at that moment with no pipeline around the model.

The ratio replay / model-only is the share of the bare model's speed the whole pipeline keeps;
it is comparable across runs on noisy machines where absolute figures are not. Replay and
reference alternate ``--repeat`` times; best (least disturbed) and median are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.machine import machine
from models.inference import LoadedModel
from stream.context.reveal import LabelSchedule
from stream.pipeline.records import ScoredRecordStore
from stream.redis_client import connect
from stream.replay.labels import read_label_file
from stream.replay.run import ReplayOptions, prepare_replay
from stream.replay.sources import FileSource
from stream.settings import Settings, load_settings


def simulated(directory: Path, customers: int, days: int) -> Path:
    from stream.simulate.config import build_config
    from stream.simulate.engine import simulate
    from stream.simulate.writers import write_files

    config = build_config(
        customers=customers, days=days, seed=21, start_date="2026-02-01", prevalence=0.03
    )
    write_files(simulate(config), directory, progress=False)
    return directory


def one_replay(
    settings: Settings, data: Path, batch_size: int, version: str | None, keep: bool
) -> tuple[float, dict[str, Any], str]:
    labels_path = data / "labels.jsonl"
    labels = read_label_file(labels_path) if labels_path.is_file() else []
    run = prepare_replay(
        settings,
        ReplayOptions(
            model_version=version,
            batch_size=batch_size,
            labels=LabelSchedule(labels, timedelta(0)),
            labels_source=str(labels_path),
            keep_state=keep,
            progress=False,
        ),
    )
    manifest = run.run(FileSource(data / "events.jsonl"))
    rate = manifest.counts.events / manifest.timings.seconds
    return rate, manifest.model_dump(mode="json"), run.namespace


def model_only_rate(
    settings: Settings, model: LoadedModel, namespace: str, event_ids: list[str], batch_size: int
) -> float:
    client = connect(settings.redis)
    records = ScoredRecordStore(client, namespace, 3600).get_batch(event_ids)
    client.close()
    texts = [r.narrative for r in records if r is not None]
    features = np.asarray([r.features for r in records if r is not None], dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        model.predict_batch(texts[start : start + batch_size], features[start : start + batch_size])
    return len(texts) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="simulator output (default: simulate one)")
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model-version")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    from models.inference import load_model
    from stream.context.store import ContextStore

    settings = load_settings()
    with tempfile.TemporaryDirectory() as folder:
        settings = settings.model_copy(update={"home": Path(folder) / "home"})
        data = args.data or simulated(Path(folder) / "sim", args.customers, args.days)
        model = load_model(settings.model, args.model_version, batch_size=args.batch_size)
        replay_rates, model_rates, manifests = [], [], []
        for _ in range(args.repeat):
            rate, manifest, namespace = one_replay(
                settings, data, args.batch_size, args.model_version, keep=True
            )
            replay_rates.append(rate)
            manifests.append(manifest)
            scores = pq.read_table(
                settings.home / "runs" / manifest["run_id"] / "scores.parquet", columns=["event_id"]
            )
            event_ids = scores.column("event_id").to_pylist()
            model_rates.append(
                model_only_rate(settings, model, namespace, event_ids, args.batch_size)
            )
            with ContextStore(
                connect(settings.redis),
                settings.context.model_copy(update={"namespace": namespace}),
            ) as store:
                store.drop_namespace()

    def summary(rates: list[float]) -> dict[str, float]:
        return {"best": round(max(rates), 1), "median": round(statistics.median(rates), 1)}

    last = manifests[-1]
    result = {
        "machine": machine(),
        "events": last["counts"]["events"],
        "alerts": last["counts"]["alerts"],
        "batch_size": args.batch_size,
        "model_version": last["model_version"],
        "replay_events_per_s": summary(replay_rates),
        "model_only_events_per_s": summary(model_rates),
        "ratio_best": round(max(replay_rates) / max(model_rates), 3),
        "replay_model_seconds_share": round(
            last["timings"]["model_seconds"] / last["timings"]["seconds"], 3
        ),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
