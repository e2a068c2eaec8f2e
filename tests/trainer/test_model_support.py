"""What the feedback loop needs from models/: fine-tuning from existing weights, the shadow
pointer, history lines that move nothing, reference statistics stored with a version, and
challenger thresholds."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from models.backbones import load_tokenizer
from models.classifier import RiskClassifier
from models.errors import ModelLoadError, RegistryError
from models.examples import NarrativeSet
from models.registry import Registry, TrainingRecord
from models.thresholds import calibrate
from models.train import build_model, train
from models.train_config import preset
from schemas import Typology
from stream.trainer.finetune import challenger_thresholds

FEATURES = ("a", "b", "c")


def narratives(n: int, seed: int, scale: float = 1.0) -> NarrativeSet:
    rng = np.random.default_rng(seed)
    suspicious = rng.random(n) < 0.2
    return NarrativeSet(
        event_ids=[f"e{seed}-{i}" for i in range(n)],
        days=[date(2026, 1, 1)] * n,
        texts=[
            "many payments to new merchants at night" if s else "card payment at a grocery"
            for s in suspicious
        ],
        clauses=[[] for _ in range(n)],
        features=(rng.normal(size=(n, len(FEATURES))) * scale).astype(np.float32),
        typologies=[Typology.CARD_TESTING if s else Typology.LEGITIMATE for s in suspicious],
    )


@pytest.fixture
def parent() -> RiskClassifier:
    model = build_model(preset("tiny", hybrid=True), FEATURES)
    model.fit_feature_scaling(torch.from_numpy(narratives(200, 0).features))
    model.eval()
    return model


def test_fine_tuning_starts_from_the_parent_and_leaves_it_alone(parent: RiskClassifier) -> None:
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    # Features on another scale: a fresh run would refit the scaling, a fine-tune must not.
    data = narratives(64, 1, scale=50.0)
    config = preset("tiny", hybrid=True, max_steps=1, eval_every=1, learning_rate=1e-9)
    tuned = train(config, data, narratives(32, 2), FEATURES, init_from=parent, progress=False)
    fresh = train(config, data, narratives(32, 2), FEATURES, progress=False)

    for name, value in parent.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} of the parent changed"
    tuned_state = tuned.model.state_dict()
    # one step at a negligible learning rate: the fine-tune is still the parent's weights
    assert torch.allclose(tuned_state["head.weight"], before["head.weight"], atol=1e-6)
    assert torch.equal(tuned_state["feature_mean"], before["feature_mean"])
    assert not torch.allclose(fresh.model.state_dict()["head.weight"], before["head.weight"])
    assert not torch.equal(fresh.model.state_dict()["feature_mean"], before["feature_mean"])


def test_fine_tuning_refuses_another_feature_layout(parent: RiskClassifier) -> None:
    from models.errors import TrainingError

    config = preset("tiny", hybrid=True, max_steps=1, eval_every=1)
    with pytest.raises(TrainingError, match="another feature layout"):
        train(
            config, narratives(32, 1), narratives(32, 2), ("x", "y", "z"), init_from=parent,
            progress=False,
        )  # fmt: skip


def _save(registry: Registry, model: RiskClassifier, **extra: object) -> str:
    return registry.save(
        model=model,
        tokenizer=load_tokenizer(),
        narrative_spec={"version": "n1"},
        training=TrainingRecord(
            created_at=datetime.now(UTC),
            parent_version=None,
            narrative_version="n1",
            data_window={},
            seed=0,
            train_config={},
        ),
        metrics={"average_precision": 0.5},
        thresholds=calibrate(np.linspace(0, 1, 50), np.arange(50) > 40),
        **extra,  # type: ignore[arg-type]
    )


def test_shadow_pointer_history_and_rollback_ignore_each_other(
    tmp_path: Path, parent: RiskClassifier
) -> None:
    registry = Registry(tmp_path)
    first, second, third = (_save(registry, parent, name=n) for n in ("a", "b", "c"))
    registry.promote(first)
    registry.promote(second, "better", {"cycle": {"champion_metrics": {"average_precision": 0.4}}})
    assert registry.history()[-1]["cycle"]["champion_metrics"]["average_precision"] == 0.4

    registry.set_shadow(third, "won offline")
    assert registry.shadow() == third
    registry.record("reject", second, "worse", {"action": "not this", "cycle": {}})
    assert registry.history()[-1]["action"] == "reject"  # details never overwrite the fields
    registry.set_shadow(None, "retired")
    assert registry.shadow() is None
    assert [e["action"] for e in registry.history()] == [
        "promote", "promote", "shadow", "reject", "unshadow",
    ]  # fmt: skip
    # shadow, reject and unshadow lines do not disturb the champions' stack
    assert registry.rollback() == first

    registry.set_shadow(third)
    registry.promote(third)
    assert registry.champion() == third
    assert registry.shadow() is None  # the shadow became the champion
    with pytest.raises(RegistryError):
        registry.record("promote", third)
    with pytest.raises(RegistryError):
        registry.set_shadow("no-such-version")


def test_reference_stats_are_stored_verified_and_optional(
    tmp_path: Path, parent: RiskClassifier
) -> None:
    registry = Registry(tmp_path)
    plain = _save(registry, parent)
    assert registry.reference_stats(plain) is None
    with_stats = _save(registry, parent, reference_stats={"rows": 3, "features": {}})
    assert registry.reference_stats(with_stats) == {"rows": 3, "features": {}}
    registry.load(with_stats)  # the manifest vouches for the extra file
    (registry.path(with_stats) / "reference_stats.json").write_text('{"rows": 4}')
    with pytest.raises(ModelLoadError, match="changed"):
        registry.reference_stats(with_stats)


def test_challenger_thresholds_aim_at_the_alert_rate_on_traffic() -> None:
    rng = np.random.default_rng(3)
    like = calibrate(rng.random(1000), rng.random(1000) < 0.1, alert_rate=0.05)
    traffic = rng.random(2000)
    validation_scores = np.concatenate([rng.uniform(0.6, 1, 40), rng.uniform(0, 0.7, 160)])
    validation_labels = np.arange(200) < 40
    thresholds = challenger_thresholds(like, traffic, validation_scores, validation_labels)
    assert thresholds.target == like.target
    assert thresholds.at_alert_rate.alert_rate == pytest.approx(0.05, abs=0.002)
    assert np.mean(traffic >= thresholds.alert_threshold) <= 0.05
    assert thresholds.at_precision.precision >= like.target_precision
    assert thresholds.calibration_events == 2000

    # too little traffic: falls back to the validation scores
    few = challenger_thresholds(like, traffic[:10], validation_scores, validation_labels)
    assert few.at_alert_rate.alert_rate == pytest.approx(0.05, abs=0.01)
