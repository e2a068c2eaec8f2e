"""Fixtures shared by the model tests: a tiny student trained once per session on synthetic
narratives (about 15 s on 2 cores), and an untrained hybrid model for registry checks."""

from __future__ import annotations

import pytest
from model_synthetic import FEATURE_NAMES, split_data

from models.classifier import RiskClassifier
from models.examples import SplitData
from models.thresholds import Thresholds
from models.train import TrainResult, build_model, calibrate_on, preset, train


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
