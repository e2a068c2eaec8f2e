"""A bank's own history end to end, through the command line on the real broker and Redis:
import a card-payments CSV (the fixture's format: semicolons, Paris wall-clock times, euros
with a decimal comma, a fraud flag and report date), build a dataset from its labels with a
date split, train a tiny model, evaluate it, export its scores, replay the history through
the scorer with labels revealed at their label time, and report on the replay."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from schemas import LabelEvent, TransactionEvent, decode
from stream.replay.manifest import RunManifest
from stream.settings import Settings, to_env

from .conftest import CARD_HEADER, CARD_MAPPING

# Six child processes that load torch (train, eval, score, replay) on a small history: a few
# minutes on 2 shared cores, so longer than the suite's default per-test timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]


def card_history(path: Path, *, customers: int = 12, days: int = 24, seed: int = 4) -> int:
    """Everyday grocery and restaurant payments in France; each day one customer's card is
    tested then drained online abroad at night, and charged back 4-9 days later. Returns the
    number of fraudulent rows."""
    rng = random.Random(seed)
    rows, frauds = [], 0
    start = datetime(2026, 1, 1)
    for day in range(days):
        for customer in range(customers):
            for n in range(rng.randint(3, 7)):
                when = start + timedelta(days=day, hours=8 + 2 * n, minutes=rng.randint(0, 59))
                shop = rng.choice([("M-1", "5411"), ("M-2", "5812"), ("M-3", "5411")])
                rows.append(
                    [
                        f"T{len(rows):06d}",
                        when,
                        1000 + customer,
                        "CHIP",
                        f"{rng.randint(500, 6000) / 100:.2f}".replace(".", ","),
                        shop[0],
                        "fr",
                        shop[1],
                        f"TERM-{shop[0]}",
                        "N",
                        "",
                    ]
                )
        victim = day % customers
        reported = start + timedelta(days=day + rng.randint(4, 9))
        for n in range(4):
            when = start + timedelta(days=day, hours=2, minutes=5 * n)
            amount = (
                "1,00" if n < 2 else f"{rng.randint(80_000, 200_000) / 100:.2f}".replace(".", ",")
            )
            rows.append(
                [
                    f"T{len(rows):06d}",
                    when,
                    1000 + victim,
                    "ECOM",
                    amount,
                    f"M-X{day}",
                    "ng",
                    "5732",
                    "",
                    "Y",
                    reported.strftime("%d/%m/%Y"),
                ]
            )
            frauds += 1
    rng.shuffle(rows)
    with path.open("w", newline="") as file:
        writer = csv.writer(file, delimiter=";")
        writer.writerow(CARD_HEADER.split(";"))
        for ref, when, client, mode, amount, merchant, country, mcc, terminal, flag, day in rows:
            writer.writerow(
                [
                    ref,
                    when.strftime("%d/%m/%Y %H:%M:%S"),
                    client,
                    f"tok-{client}",
                    mode,
                    amount,
                    "EUR",
                    merchant,
                    country,
                    mcc,
                    terminal,
                    flag,
                    day,
                ]
            )
    return frauds


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **to_env(settings), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def test_import_train_evaluate_score_replay_and_report(
    test_settings: Settings, tmp_path: Path
) -> None:
    settings = test_settings
    payments, mapping, data = tmp_path / "payments.csv", tmp_path / "card.toml", tmp_path / "data"
    frauds = card_history(payments)
    mapping.write_text(CARD_MAPPING)

    imported = run(
        settings,
        "data",
        "import",
        str(payments),
        "--mapping",
        str(mapping),
        "--out",
        str(data),
        "--no-progress",
    )
    assert "rejected none of" in imported.stdout
    events = [
        decode(TransactionEvent, line) for line in (data / "events.jsonl").read_bytes().splitlines()
    ]
    labels = [
        decode(LabelEvent, line) for line in (data / "labels.jsonl").read_bytes().splitlines()
    ]
    assert len(labels) == frauds
    assert events == sorted(events, key=lambda e: (e.event_time, e.event_id))

    built = run(
        settings,
        "model",
        "dataset",
        "--data",
        str(data),
        "--train-until",
        "2026-01-13",
        "--validate-until",
        "2026-01-18",
        "--gap",
        "1",
    )
    assert "targets from labels as of" in built.stdout
    assert "split by dates: train < 2026-01-13 <= validation < 2026-01-18 <= test" in built.stdout
    meta = orjson.loads((data / "narratives" / "meta.json").read_bytes())["provenance"]
    assert meta["targets"] == "labels"
    assert meta["labelled_suspicious"] + meta["presumed_legitimate"] + meta[
        "left_out_young"
    ] == len(events)
    assert meta["left_out_young"] > 0  # the last days' outcomes are not known yet

    trained = run(
        settings,
        "model",
        "train",
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--max-steps",
        "20",
        "--legit-sample-rate",
        "0.2",
        "--alert-rate",
        "0.05",
    )
    assert "registered" in trained.stdout
    evaluated = run(settings, "model", "eval", "--data", str(data))
    assert "PR-AUC (average precision)" in evaluated.stdout

    scores_path = tmp_path / "scores.csv"
    scored = run(settings, "model", "score", "--data", str(data), "--out", str(scores_path))
    assert f"{len(events):,} events scored" in scored.stdout
    with scores_path.open() as file:
        scores = list(csv.DictReader(file))
    assert [row["event_id"] for row in scores] == [e.event_id for e in events]
    threshold = float(scored.stdout.split("alert threshold ")[1].split(";")[0])
    # The threshold is printed to 4 decimals and the scores to 7: a score within that
    # rounding of the printed threshold may fall on either side of the exact one.
    rounding = 0.5e-4 + 0.5e-7
    clear = [row for row in scores if abs(float(row["score"]) - threshold) > rounding]
    assert len(scores) - len(clear) <= 3
    assert all((row["alerted"] == "true") == (float(row["score"]) > threshold) for row in clear)
    assert sum(row["label"] == "stolen_card" for row in scores) == frauds

    run_id = f"byo-{uuid.uuid4().hex[:8]}"
    replayed = run(
        settings,
        "replay",
        "--file",
        str(data / "events.jsonl"),
        "--run-id",
        run_id,
        "--batch-size",
        "64",
        "--no-progress",
    )
    assert f"labels: {len(labels):,} from file {data / 'labels.jsonl'}" in replayed.stdout
    manifest = RunManifest.read(settings.home / "runs" / run_id)
    assert manifest.status == "completed"
    assert manifest.counts.events == len(events)
    assert manifest.counts.dead_letters == 0
    # revealed as they arrived: only labels known by the last event's time
    last = events[-1].event_time
    assert manifest.labels.revealed == sum(lb.label_time <= last for lb in labels)

    reported = run(settings, "backtest", "report", run_id, "--no-broker")
    report = orjson.loads((settings.home / "runs" / run_id / "report" / "report.json").read_bytes())
    assert report["truth_source"] == f"labels-file {data / 'labels.jsonl'}"
    assert report["events"] == len(events)
    assert report["suspicious"] == frauds
    assert f"run {run_id}" in reported.stdout
