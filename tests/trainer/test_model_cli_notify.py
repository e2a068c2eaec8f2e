"""`riskstream model promote/rollback` tell running scorers on the models topic."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from models.backbones import load_tokenizer
from models.registry import Registry, TrainingRecord
from models.settings import ModelSettings
from models.thresholds import calibrate
from models.train import build_model
from models.train_config import preset
from stream.cli import app
from stream.settings import KafkaSettings, Settings, TopicSettings, to_env

pytestmark = pytest.mark.integration


def register(registry: Registry) -> str:
    return registry.save(
        model=build_model(preset("tiny", hybrid=False), ()),
        tokenizer=load_tokenizer(),
        narrative_spec={},
        training=TrainingRecord(
            created_at=datetime.now(UTC),
            parent_version=None,
            narrative_version="n1",
            data_window={},
            seed=0,
            train_config={},
        ),
        metrics={},
        thresholds=calibrate(np.linspace(0, 1, 50), np.arange(50) > 40),
    )


def test_promote_and_rollback_announce_the_new_champion(
    kafka_settings: KafkaSettings,
    new_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = Registry(tmp_path / "registry")
    first, second = register(registry), register(registry)
    settings = Settings(
        kafka=kafka_settings,
        topics=TopicSettings(models=new_topic(1, "models")),
        model=ModelSettings(registry_dir=registry.root),
    )
    for key, value in to_env(settings).items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    for args in (["promote", first], ["promote", second, "--reason", "better"], ["rollback"]):
        result = runner.invoke(app, ["model", *args])
        assert result.exit_code == 0, result.output
        assert "notified scorers" in result.output
    assert runner.invoke(app, ["model", "promote", second, "--no-notify"]).exit_code == 0

    consumer = Consumer(
        {
            **kafka_settings.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.models])
    notices: list[dict[str, str]] = []
    deadline = time.monotonic() + 60
    try:
        while len(notices) < 3 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                notices.append(orjson.loads(message.value() or b"{}"))
        time.sleep(2)  # the --no-notify promote must add nothing
        extra = consumer.poll(1.0)
    finally:
        consumer.close()
    assert [(n["action"], n["version"]) for n in notices] == [
        ("promote", first),
        ("promote", second),
        ("rollback", first),
    ]
    assert notices[1]["reason"] == "better"
    assert extra is None
    assert registry.champion() == second
