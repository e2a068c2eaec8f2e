"""Fixtures shared by the model tests.

Small labelled narrative sets written for these tests: worded like the narrative builder's
output, with numeric features behind them, and suspicious typologies that differ from
legitimate events in a few clauses (plus look-alikes, so the task is not quite trivial). A tiny
student is trained on them once per session (about 15 s on 2 cores).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from models.classifier import RiskClassifier
from models.examples import NarrativeSet, SplitData, split_by_day
from models.registry import TrainingRecord
from models.thresholds import Thresholds, calibrate
from models.train import TrainResult, build_model, calibrate_on, train
from models.train_config import preset
from schemas import Typology

FEATURE_NAMES = ("amount_vs_usual", "events_last_hour", "new_device", "new_country")

_LEGIT_CLAUSES = [
    (
        "channel",
        [
            "card payment at a grocery merchant",
            "online purchase at a bookshop",
            "card payment at a pharmacy",
            "transfer to a known beneficiary",
        ],
    ),
    (
        "amount",
        [
            "amount typical for this customer",
            "amount slightly below usual",
            "amount a little above usual",
        ],
    ),
    ("device", ["from a device seen many times", "from the usual device"]),
    ("velocity", ["first payment today", "a few payments this week"]),
]
_SUSPICIOUS = {
    Typology.CARD_TESTING: [
        ("channel", "online purchase at an unfamiliar merchant"),
        ("amount", "amount far below usual"),
        ("device", "from a device never seen before"),
        ("velocity", "many payments in the last hour at many different merchants"),
    ],
    Typology.STRUCTURING: [
        ("channel", "cash deposit at a branch"),
        ("amount", "amount just under the reporting threshold"),
        ("device", "from the usual device"),
        ("velocity", "several similar cash deposits this week"),
    ],
}


def narrative_set(
    n: int, start: date, days: int, seed: int, prevalence: float = 0.08
) -> NarrativeSet:
    rng = np.random.default_rng(seed)
    texts, clauses, features, typologies, day_list, ids = [], [], [], [], [], []
    kinds = list(_SUSPICIOUS)
    for i in range(n):
        suspicious = rng.random() < prevalence
        if suspicious:
            typology = kinds[int(rng.integers(len(kinds)))]
            parts = list(_SUSPICIOUS[typology])
            # a look-alike clause now and then keeps the task from being trivial
            if rng.random() < 0.3:
                parts[0] = ("channel", _LEGIT_CLAUSES[0][1][int(rng.integers(4))])
            row = [rng.normal(3.0, 1.0), rng.poisson(6), 1.0, float(rng.random() < 0.5)]
        else:
            typology = Typology.LEGITIMATE
            parts = [
                (cid, options[int(rng.integers(len(options)))]) for cid, options in _LEGIT_CLAUSES
            ]
            if rng.random() < 0.05:  # benign look-alike: a burst of payments
                parts[3] = (
                    "velocity",
                    "many payments in the last hour at many different merchants",
                )
            row = [rng.normal(1.0, 0.5), rng.poisson(1), float(rng.random() < 0.05), 0.0]
        texts.append("; ".join(text for _, text in parts) + ".")
        clauses.append(parts)
        features.append(row)
        typologies.append(typology)
        day_list.append(start + timedelta(days=int(i * days / n)))
        ids.append(f"ev-{seed}-{i}")
    return NarrativeSet(
        event_ids=ids,
        days=day_list,
        texts=texts,
        clauses=clauses,
        features=np.asarray(features, dtype=np.float32),
        typologies=typologies,
    )


def split_data(n: int = 1500, seed: int = 7) -> SplitData:
    full = narrative_set(n, date(2025, 1, 1), 30, seed)
    parts = split_by_day(full.days)
    return SplitData(
        train=full.subset(parts["train"]),
        validation=full.subset(parts["validation"]),
        test=full.subset(parts["test"]),
        feature_names=FEATURE_NAMES,
        narrative_spec={"version": "test-1"},
    )


def training_record(parent: str | None = None) -> TrainingRecord:
    return TrainingRecord(
        created_at=datetime.now(UTC),
        parent_version=parent,
        narrative_version="test-1",
        data_window={"train": ("2025-01-01", "2025-01-18")},
        seed=0,
        train_config={},
    )


def flat_thresholds() -> Thresholds:
    return calibrate(np.linspace(0, 1, 100), np.arange(100) >= 90, alert_rate=0.1)


@pytest.fixture
def make_narratives() -> Callable[..., NarrativeSet]:
    """``make_narratives(n, seed=..)``: n synthetic narratives over two days."""

    def make(n: int, seed: int = 0) -> NarrativeSet:
        return narrative_set(n, date(2025, 1, 1), 2, seed)

    return make


@pytest.fixture
def thresholds() -> Thresholds:
    return flat_thresholds()


@pytest.fixture
def record() -> Callable[[str | None], TrainingRecord]:
    return training_record


@pytest.fixture
def save(thresholds: Thresholds) -> Callable[..., str]:
    """``save(registry, model, parent=None) -> version``: register ``model`` with test metadata."""
    from models.backbones import load_tokenizer
    from models.registry import Registry

    def save_version(registry: Registry, model: RiskClassifier, parent: str | None = None) -> str:
        return registry.save(
            model=model,
            tokenizer=load_tokenizer(),
            narrative_spec={"version": "test-1", "edges": {"amount": [1, 2]}},
            training=training_record(parent),
            metrics={"average_precision": 0.5},
            thresholds=thresholds,
        )

    return save_version


@pytest.fixture(scope="session")
def synthetic_split() -> SplitData:
    return split_data()


@pytest.fixture(scope="session")
def trained_tiny(synthetic_split: SplitData) -> TrainResult:
    config = preset("tiny", hybrid=False, seed=3)
    return train(
        config, synthetic_split.train, synthetic_split.validation, FEATURE_NAMES, progress=False
    )


@pytest.fixture(scope="session")
def tiny_thresholds(trained_tiny: TrainResult, synthetic_split: SplitData) -> Thresholds:
    return calibrate_on(
        trained_tiny.model, trained_tiny.tokenizer, synthetic_split.validation, alert_rate=0.05
    )


@pytest.fixture
def untrained_hybrid() -> RiskClassifier:
    model = build_model(preset("tiny", hybrid=True), FEATURE_NAMES)
    model.eval()
    return model
