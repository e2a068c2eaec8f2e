"""The feedback loop out of the box: nothing but riskstream's own commands, on the real broker
and Redis.

`riskstream simulate --out DIR --kafka` streams traffic (card testing only: what the session's
champion does not catch) and its chargebacks; `riskstream run scorer` scores it;
`riskstream run analyst` dispositions the alerts from the simulation's truth;
`riskstream run trainer` joins every label, fine-tunes a challenger, promotes it; the running
scorer loads it. No label is hand-made and no message is produced by the test. Sized to take
a few minutes on 2 busy cores: 150 customers over 8 days, a 150-step fine-tune of the tiny
champion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from models.registry import Registry
from models.settings import ModelSettings
from stream.devenv import free_ports
from stream.redis_client import connect
from stream.settings import ScorerSettings, Settings, TrainerSettings, to_env
from stream.trainer.store import MAX_UNJOINED, CaseStore

from .conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OTHER_TYPOLOGIES = [
    "account_takeover", "stolen_card", "compromised_terminal", "structuring", "mule_fan_in_out",
    "round_tripping", "pass_through", "dormant_reactivation", "high_risk_jurisdiction",
]  # fmt: skip


def loop_settings(test_settings: Settings, trained_registry: Path, tmp_path: Path) -> Settings:
    registry = tmp_path / "registry"
    shutil.copytree(trained_registry, registry)
    scorer_port, trainer_port = free_ports(2)
    namespace = test_settings.context.namespace
    return test_settings.model_copy(
        update={
            "model": ModelSettings(registry_dir=registry),
            "scorer": ScorerSettings(
                group_id=f"scorer-{namespace}",
                batch_max_size=64,
                batch_max_wait_ms=20,
                metrics_port=scorer_port,
            ),
            "trainer": TrainerSettings(
                group_id=f"trainer-{namespace}",
                min_labels_per_class=10,
                min_holdout_per_class=3,
                holdout_share=0.3,
                validation_share=0.2,
                negative_maturity_days=0.5,
                max_presumed_negatives=3000,
                finetune_every_labels=10_000,
                # The first cycle starts once both classes are in; if it cannot decide (too
                # few cases had arrived), the next starts a minute later with what came since.
                finetune_every_minutes=1.0,
                finetune_steps=150,
                # A holdout of a few dozen suspicious cases: precision at the threshold moves by
                # ~0.07 between equally good models; the production 0.02 would be a coin toss.
                max_precision_loss=0.15,
                check_every_s=1.0,
                metrics_port=trainer_port,
            ),
        }
    )


def simulate_into_kafka(settings: Settings, out: Path) -> dict[str, int]:
    args = [
        "simulate", "--out", str(out), "--kafka", "--no-progress", "--customers", "150",
        "--days", "8", "--seed", "21", "--start-date", "2026-02-15", "--prevalence", "0.03",
        "--warmup-days", "2", "--chargeback-delay-days", "0.5-1.5", "--case-delay-days", "1-2",
        *[arg for typology in OTHER_TYPOLOGIES for arg in ("--exclude", typology)],
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env={**os.environ, **to_env(settings)},
        capture_output=True,
        check=True,
        timeout=300,
    )
    kafka: dict[str, int] = orjson.loads(done.stdout)["kafka"]
    return kafka


def labels_when_quiet(
    settings: Settings, *, at_least: int, quiet_s: float = 45, timeout_s: float = 900
) -> list[dict[str, object]]:
    """The labels topic once the desk's dispositions have begun and nothing new arrived for
    ``quiet_s`` (the scorer is through the traffic and the desk has flushed)."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topics.labels])
    labels: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
            labels += [orjson.loads(m.value() or b"{}") for m in batch]
            if batch:
                last_new = time.monotonic()
            elif (
                len(labels) > at_least
                and any(label.get("source") == "analyst" for label in labels)
                and time.monotonic() - last_new >= quiet_s
            ):
                return labels
    finally:
        consumer.close()
    raise AssertionError(f"labels still arriving after {timeout_s} s: {len(labels)}")


def test_simulator_analyst_scorer_and_trainer_learn_and_the_scorer_switches(
    test_settings: Settings,
    trained_registry: Path,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = loop_settings(test_settings, trained_registry, tmp_path)
    registry = Registry(settings.model.registry_dir)
    champion = registry.champion()
    traffic = tmp_path / "traffic"

    scorer = start_worker(settings, "run", "scorer")
    analyst = start_worker(
        settings, "run", "analyst", "--truth", str(traffic / "truth.jsonl"), "--delay", "4h",
        "--flush-after-s", "5",
    )  # fmt: skip
    produced = simulate_into_kafka(settings, traffic)
    assert produced["events"] > 0
    assert produced["labels"] > 0
    # The trainer starts once the desk is done (its first cycle would otherwise judge on the
    # first few labels); it then reads them all from the topic, as after any restart.
    labels = labels_when_quiet(settings, at_least=produced["labels"])
    assert any(label["source"] == "analyst" for label in labels)
    trainer = start_worker(settings, "run", "trainer")

    try:
        promoted = wait_for(
            lambda: registry.champion() if registry.champion() != champion else None,
            "a promotion",
            timeout_s=900,
        )
    except AssertionError:
        tails = "\n".join(
            f"--- {w.log_path.name}\n{w.log()[-3000:]}" for w in (scorer, analyst, trainer)
        )
        raise AssertionError(f"no promotion; history {registry.history()}\n{tails}") from None
    assert isinstance(promoted, str)
    entry = registry.history()[-1]
    assert (entry["action"], entry["version"], entry["previous"]) == ("promote", promoted, champion)
    cycle = entry["cycle"]
    assert (
        cycle["challenger_metrics"]["average_precision"]
        > cycle["champion_metrics"]["average_precision"]
    )
    # The cases came from both label sources. Legitimate labels only the desk writes (its
    # false positives); fraud is charged back by the simulator - and a chargeback outranks the
    # desk's true-positive disposition of the same event (one verdict per event).
    assert cycle["data"]["labelled_legitimate"] > 0, cycle["data"]
    composition = cycle["data"]["train_composition"]["suspicious_by_source"]
    assert composition.get("chargeback", 0) > 0, cycle["data"]
    assert cycle["data"]["presumed_negatives"] > 0

    # The running scorer loads the new champion.
    wait_for(lambda: f"now scoring with model {promoted}" in scorer.log(), "the scorer to switch")

    store = CaseStore(
        connect(settings.redis), settings.context.namespace, max_cases=100_000, ttl_s=600,
        max_unjoined=MAX_UNJOINED,
    )  # fmt: skip
    outcomes = store.state().outcomes
    assert outcomes.get("joined", 0) + outcomes.get("joined_late", 0) > 0
    assert outcomes.get("invalid", 0) == 0
    assert "dispositions sent" in analyst.log()

    for worker in (analyst, trainer, scorer):
        assert worker.terminate() == 0, worker.log()
        assert "Traceback" not in worker.log(), worker.log()
