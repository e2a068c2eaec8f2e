import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from models.backbones import load_tokenizer
from models.classifier import RiskClassifier
from models.errors import ModelLoadError, RegistryError, UnsafeModelFormat
from models.examples import NarrativeSet
from models.inference import from_classifier, load_model
from models.registry import Registry, TrainingRecord
from models.settings import ModelSettings
from models.thresholds import Thresholds

Save = Callable[..., str]


def test_round_trip_scores_identically(
    tmp_path: Path,
    untrained_hybrid: RiskClassifier,
    save: Save,
    make_narratives: Callable[..., NarrativeSet],
    thresholds: Thresholds,
) -> None:
    untrained_hybrid.fit_feature_scaling(torch.tensor([[1.0, 2, 0, 0], [3.0, 5, 1, 0]]))
    registry = Registry(tmp_path)
    version = save(registry, untrained_hybrid)
    registry.promote(version)
    data = make_narratives(40, seed=1)
    before = from_classifier(untrained_hybrid, load_tokenizer(), thresholds)
    loaded = load_model(ModelSettings(registry_dir=tmp_path, device="cpu"))
    assert loaded.version == version
    assert loaded.narrative_version == "test-1"
    assert loaded.narrative_spec["edges"] == {"amount": [1, 2]}
    assert loaded.thresholds == thresholds
    expected = before.predict_batch(data.texts, data.features)
    actual = loaded.predict_batch(data.texts, data.features)
    np.testing.assert_allclose(actual.scores, expected.scores, rtol=1e-5, atol=1e-6)
    assert actual.typologies == expected.typologies
    described = registry.describe(version)
    assert described["training"]["data_window"]["train"] == ["2025-01-01", "2025-01-18"]
    assert [s.version for s in registry.summaries()] == [version]


def test_promote_and_rollback_walk_the_champion_history(
    tmp_path: Path, untrained_hybrid: RiskClassifier, save: Save
) -> None:
    registry = Registry(tmp_path)
    first = save(registry, untrained_hybrid)
    second = save(registry, untrained_hybrid, parent=first)
    third = save(registry, untrained_hybrid, parent=second)
    assert len({first, second, third}) == 3
    with pytest.raises(RegistryError):
        registry.rollback()
    for version in (first, second, third):
        registry.promote(version)
    assert registry.champion() == third
    assert registry.rollback() == second
    assert registry.rollback() == first
    with pytest.raises(RegistryError):
        registry.rollback()
    registry.promote(third)
    assert registry.champion() == third
    assert [entry["action"] for entry in registry.history()][-1] == "promote"


def test_refuses_a_pickled_checkpoint_beside_the_weights(
    tmp_path: Path, untrained_hybrid: RiskClassifier, save: Save
) -> None:
    registry = Registry(tmp_path)
    version = save(registry, untrained_hybrid)
    torch.save(untrained_hybrid.state_dict(), tmp_path / version / "pytorch_model.bin")
    with pytest.raises(UnsafeModelFormat):
        registry.load(version)


def test_refuses_pickled_weights_under_the_safetensors_name(
    tmp_path: Path, untrained_hybrid: RiskClassifier, save: Save
) -> None:
    registry = Registry(tmp_path)
    version = save(registry, untrained_hybrid)
    torch.save(untrained_hybrid.state_dict(), tmp_path / version / "model.safetensors")
    with pytest.raises(UnsafeModelFormat):
        registry.load(version)


def test_detects_changed_weights(
    tmp_path: Path, untrained_hybrid: RiskClassifier, save: Save
) -> None:
    registry = Registry(tmp_path)
    version = save(registry, untrained_hybrid)
    weights = tmp_path / version / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="changed"):
        registry.load(version)


def test_half_written_versions_are_invisible(
    tmp_path: Path, untrained_hybrid: RiskClassifier, save: Save
) -> None:
    registry = Registry(tmp_path)
    (tmp_path / ".tmp-crashed").mkdir()
    (tmp_path / ".tmp-crashed" / "config.json").write_text("{}")
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="no champion"):
        registry.load()
    version = save(registry, untrained_hybrid)
    assert registry.versions() == [version]
    assert not any(
        p.name.startswith(".tmp") and p.name != ".tmp-crashed" for p in tmp_path.iterdir()
    )
    assert os.listdir(tmp_path / version)


def test_keeps_a_training_sample_for_fine_tunes_to_replay(
    tmp_path: Path,
    untrained_hybrid: RiskClassifier,
    make_narratives: Callable[..., NarrativeSet],
    thresholds: Thresholds,
    record: Callable[[str | None], TrainingRecord],
    save: Save,
) -> None:
    registry = Registry(tmp_path)
    sample = make_narratives(30, seed=2)
    version = registry.save(
        model=untrained_hybrid,
        tokenizer=load_tokenizer(),
        narrative_spec={"version": "test-1"},
        training=record(None),
        metrics={},
        thresholds=thresholds,
        replay=sample,
    )
    replayed = registry.replay(version)
    assert replayed is not None
    assert replayed.texts == sample.texts
    assert replayed.typologies == sample.typologies
    np.testing.assert_array_equal(replayed.features, sample.features)
    registry.load(version)  # a Parquet sample is an allowed file, digest-checked
    assert registry.replay(save(registry, untrained_hybrid)) is None  # none stored: none
    # an edited sample would teach the next fine-tune something nobody registered
    (tmp_path / version / "replay.parquet").write_bytes(b"PAR1 not what was registered")
    with pytest.raises(ModelLoadError, match="changed"):
        registry.replay(version)
