"""What the worker does with a cycle's report: pointers, history lines with both models'
metrics, notices to scorers, the shadow life cycle - on a real registry, Redis and broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import Consumer

from models.backbones import load_tokenizer
from models.registry import Registry, TrainingRecord
from models.settings import ModelSettings
from models.thresholds import calibrate
from models.train import build_model
from models.train_config import preset
from stream.context.store import ContextStore
from stream.pipeline.records import ScoredRecordStore
from stream.settings import ContextSettings, KafkaSettings, Settings, TopicSettings, TrainerSettings
from stream.trainer.ingest import LabelIngestor
from stream.trainer.loop import FeedbackLoop
from stream.trainer.metrics import TrainerMetrics
from stream.trainer.report import CycleReport
from stream.trainer.store import CaseStore, RecordSampler

pytestmark = pytest.mark.integration


def register(registry: Registry, name: str) -> str:
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
        name=name,
    )


def metrics_of(ap: float) -> dict[str, float]:
    return {"cases": 100, "suspicious": 10, "average_precision": ap, "roc_auc": 0.8,
            "precision_at_threshold": 0.5, "recall_at_threshold": 0.4}  # fmt: skip


def report(mode: str, promote: bool, champion: str, challenger: str | None) -> CycleReport:
    return CycleReport.model_validate(
        {
            "mode": mode,
            "decided": True,
            "promote": promote,
            "reason": "why",
            "champion": champion,
            "challenger": challenger,
            "champion_metrics": metrics_of(0.4),
            "challenger_metrics": metrics_of(0.6 if promote else 0.3),
        }
    )


@pytest.fixture
def loop_for(
    redis_client: redis.Redis[bytes],
    redis_namespace: str,
    kafka_settings: KafkaSettings,
    new_topic: Callable[..., str],
    tmp_path: Path,
) -> Callable[..., tuple[FeedbackLoop, Settings, CaseStore]]:
    def make(**trainer: object) -> tuple[FeedbackLoop, Settings, CaseStore]:
        settings = Settings(
            kafka=kafka_settings,
            topics=TopicSettings(models=new_topic(1, "models")),
            context=ContextSettings(namespace=redis_namespace),
            model=ModelSettings(registry_dir=tmp_path / "registry"),
            trainer=TrainerSettings.model_validate(trainer),
        )
        cases = CaseStore(redis_client, redis_namespace, max_cases=100, ttl_s=60, max_unjoined=10)
        metrics = TrainerMetrics()
        ingestor = LabelIngestor(
            context=ContextStore(redis_client, settings.context, create_namespace=True),
            records=ScoredRecordStore(redis_client, redis_namespace, 60),
            cases=cases,
            metrics=metrics,
            scored_ttl_s=60,
            unjoined_keep_s=60,
        )
        loop = FeedbackLoop(
            settings,
            cases=cases,
            ingestor=ingestor,
            sampler=RecordSampler(redis_client, redis_namespace, 1000),
            metrics=metrics,
        )
        return loop, settings, cases

    return make


def notices(settings: Settings, n: int) -> list[dict[str, str]]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.models])
    found: list[dict[str, str]] = []
    deadline = time.monotonic() + 60
    try:
        while len(found) < n and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append(orjson.loads(message.value() or b"{}"))
    finally:
        consumer.close()
    return found


def test_promotion_rejection_and_skips(
    loop_for: Callable[..., tuple[FeedbackLoop, Settings, CaseStore]], tmp_path: Path
) -> None:
    loop, settings, _ = loop_for()
    registry = Registry(settings.model.registry_dir)
    champion, challenger = register(registry, "champion"), register(registry, "challenger")
    registry.promote(champion)

    assert loop.apply(report("finetune", False, champion, None)) == "rejected"
    assert registry.champion() == champion
    rejected = registry.history()[-1]
    assert (rejected["action"], rejected["version"]) == ("reject", champion)
    assert rejected["cycle"]["challenger_metrics"]["average_precision"] == 0.3
    assert rejected["cycle"]["champion_metrics"]["average_precision"] == 0.4

    skipped = CycleReport(mode="finetune", decided=False, skip_reason="too few labels")
    assert loop.apply(skipped) == "skipped"
    assert len(registry.history()) == 2  # a skip moves nothing and records nothing

    assert loop.apply(report("finetune", True, champion, challenger)) == "promoted"
    assert registry.champion() == challenger
    promoted = registry.history()[-1]
    assert (promoted["action"], promoted["previous"]) == ("promote", champion)
    assert promoted["cycle"]["challenger_metrics"]["average_precision"] == 0.6
    assert [(n["action"], n["version"]) for n in notices(settings, 1)] == [("promote", challenger)]


def test_shadow_mode_shadows_then_promotes_or_retires(
    loop_for: Callable[..., tuple[FeedbackLoop, Settings, CaseStore]],
) -> None:
    loop, settings, cases = loop_for(shadow_mode=True)
    registry = Registry(settings.model.registry_dir)
    champion = register(registry, "champion")
    first, second = register(registry, "first"), register(registry, "second")
    registry.promote(champion)

    assert loop.apply(report("finetune", True, champion, first)) == "shadowed"
    assert (registry.champion(), registry.shadow()) == (champion, first)
    assert cases.state().shadow_since_ms > 0
    assert loop.apply(report("review", True, champion, first)) == "promoted"
    assert (registry.champion(), registry.shadow()) == (first, None)
    assert cases.state().shadow_since_ms == 0

    assert loop.apply(report("finetune", True, first, second)) == "shadowed"
    assert loop.apply(report("review", False, first, second)) == "retired"
    assert (registry.champion(), registry.shadow()) == (first, None)
    assert [e["action"] for e in registry.history()] == [
        "promote", "shadow", "promote", "shadow", "unshadow",
    ]  # fmt: skip
    assert [(n["action"], n["version"]) for n in notices(settings, 4)] == [
        ("shadow", first), ("promote", first), ("shadow", second), ("unshadow", first),
    ]  # fmt: skip
