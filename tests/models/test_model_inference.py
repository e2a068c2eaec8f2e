from collections.abc import Callable

import numpy as np
import pytest
import torch

from models.backbones import load_tokenizer
from models.classifier import TYPOLOGY_ORDER, RiskClassifier
from models.errors import ModelError
from models.examples import NarrativeSet
from models.inference import configure_cpu_threads, from_classifier, physical_cores, quantize_int8
from models.thresholds import Thresholds
from schemas import Typology

MakeNarratives = Callable[..., NarrativeSet]


def test_length_bucketing_keeps_input_order(
    untrained_hybrid: RiskClassifier, make_narratives: MakeNarratives, thresholds: Thresholds
) -> None:
    data = make_narratives(60, seed=5)
    texts = [text * (1 + i % 3) for i, text in enumerate(data.texts)]  # varied lengths
    model = from_classifier(untrained_hybrid, load_tokenizer(), thresholds)
    model.batch_size = 7
    batched = model.predict_batch(texts, data.features)
    one_by_one = [model.predict_batch([t], data.features[i : i + 1]) for i, t in enumerate(texts)]
    np.testing.assert_allclose(
        batched.scores, np.concatenate([p.scores for p in one_by_one]), rtol=1e-4, atol=1e-5
    )
    assert batched.typology_probs.shape == (60, len(TYPOLOGY_ORDER))
    np.testing.assert_allclose(batched.typology_probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(batched.scores, 1.0 - batched.typology_probs[:, 0], rtol=1e-5)
    assert Typology.LEGITIMATE not in batched.typologies
    assert np.all(batched.typology_probability() <= batched.scores + 1e-6)


def test_hybrid_model_needs_features(
    untrained_hybrid: RiskClassifier, thresholds: Thresholds
) -> None:
    model = from_classifier(untrained_hybrid, load_tokenizer(), thresholds)
    with pytest.raises(ModelError, match="hybrid"):
        model.predict_batch(["a narrative"])
    with pytest.raises(ModelError, match="shape"):
        model.predict_batch(["a narrative"], np.zeros((1, 2)))
    assert len(model.predict_batch([], np.zeros((0, 4))).scores) == 0


def test_int8_quantisation_keeps_scores_close(
    untrained_hybrid: RiskClassifier, make_narratives: MakeNarratives, thresholds: Thresholds
) -> None:
    data = make_narratives(50, seed=6)
    tokenizer = load_tokenizer()
    fp32 = from_classifier(untrained_hybrid, tokenizer, thresholds)
    int8 = from_classifier(untrained_hybrid, tokenizer, thresholds)
    int8.model = quantize_int8(untrained_hybrid)
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    a = fp32.predict_batch(data.texts, data.features).scores
    b = int8.predict_batch(data.texts, data.features).scores
    assert np.max(np.abs(a - b)) < 0.05


def test_cpu_threads_default_to_physical_cores() -> None:
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(None) == physical_cores() >= 1
        assert configure_cpu_threads(1) == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
