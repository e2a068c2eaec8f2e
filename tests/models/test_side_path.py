"""The side path trained alone before a hybrid's steps (models.side_path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from models.backbones import load_tokenizer
from models.classifier import RiskClassifier, _each_path_hidden
from models.errors import TrainingError
from models.examples import SplitData
from models.inference import quantize_int8
from models.side_path import (
    HeldSideColumns,
    SidePathAlone,
    SidePathRun,
    start_from_side_path,
    train_side_path,
)
from models.train import build_model, score, starting_model, train
from models.train_config import preset
from tests.models.conftest import FEATURE_NAMES


def warmed_up(
    split: SplitData, epochs: int = 60, target: str = "typology", members: int = 1
) -> tuple[RiskClassifier, SidePathRun]:
    config = preset(
        "tiny", hybrid=True, seed=2, dropout=0.5, side_warmup_target=target, side_members=members
    )
    torch.manual_seed(2)
    model = starting_model(config, FEATURE_NAMES, split.train)
    run = train_side_path(model, split.train, split.validation, config, epochs=epochs)
    return model, run


@pytest.mark.parametrize(("target", "members"), [("typology", 1), ("risk", 1), ("risk", 3)])
def test_the_side_path_alone_learns_the_numbers_and_the_hybrid_starts_from_it(
    synthetic_split: SplitData, target: str, members: int
) -> None:
    model, run = warmed_up(synthetic_split, target=target, members=members)
    # the synthetic features separate most suspicious events from the legitimate ones (AP of
    # a constant: the 8 % prevalence)
    assert run.validation_ap > 0.8
    assert 1 <= run.epoch_kept <= 60

    start_from_side_path(model, run)
    model.eval()
    hybrid = score(
        model,
        load_tokenizer(),
        synthetic_split.validation,
        device=torch.device("cpu"),
        max_length=model.config.max_length,
    )
    alone = run.alone.scores(synthetic_split.validation.features)
    # text columns at zero: whatever the untrained encoder says, the hybrid scores as the side
    # path (several paths: as their mean)
    np.testing.assert_allclose(hybrid, alone, atol=1e-5)


def test_several_side_paths_are_an_ensemble_each_member_learning_on_its_own(
    synthetic_split: SplitData,
) -> None:
    model, run = warmed_up(synthetic_split, target="risk", members=3)
    assert len(model.side_paths()) == 3
    assert len(run.alone.heads) == 3
    validation = synthetic_split.validation
    scaled = model._scaled(torch.from_numpy(validation.features))
    with torch.no_grad():
        member_logits = run.alone(scaled)  # eval mode: no dropout
    member_scores = torch.softmax(member_logits, dim=-1)[..., 1].numpy()
    for scores in member_scores:  # each path with its own head ranks well by itself
        ap = average_precision_score(
            validation.labels, scores, sample_weight=validation.row_weights()
        )
        assert ap > 0.8
    # and they are different networks, not one path copied three times
    assert not np.allclose(member_scores[0], member_scores[1], atol=1e-3)


def test_a_run_with_a_warm_up_begins_its_hybrid_steps_at_the_side_paths_quality(
    synthetic_split: SplitData,
) -> None:
    config = preset(
        "tiny", hybrid=True, seed=2, dropout=0.5, side_warmup_epochs=60,
        max_steps=1, eval_every=1, learning_rate=1e-9,
    )  # fmt: skip
    cold = preset("tiny", hybrid=True, seed=2, max_steps=1, eval_every=1, learning_rate=1e-9)
    warm_run = train(
        config, synthetic_split.train, synthetic_split.validation, FEATURE_NAMES, progress=False
    )
    cold_run = train(
        cold, synthetic_split.train, synthetic_split.validation, FEATURE_NAMES, progress=False
    )
    # one step at a negligible rate: the first evaluation reads the starting model
    warm_ap = warm_run.history[0]["validation_average_precision"]
    assert warm_ap > 0.8
    assert warm_ap > cold_run.history[0]["validation_average_precision"] + 0.2


def test_a_warm_up_needs_a_hybrid_with_the_linear_head(synthetic_split: SplitData) -> None:
    fused = starting_model(
        preset("tiny", hybrid=True, fusion_hidden=16), FEATURE_NAMES, synthetic_split.train
    )
    with pytest.raises(TrainingError, match="linear head"):
        SidePathAlone(fused, "risk")
    text_only = starting_model(preset("tiny", hybrid=False), FEATURE_NAMES, synthetic_split.train)
    with pytest.raises(TrainingError, match="hybrid"):
        SidePathAlone(text_only, "typology")


def test_a_side_path_lr_scale_of_zero_freezes_the_numbers_while_the_text_learns(
    synthetic_split: SplitData,
) -> None:
    def run(steps: int) -> dict[str, torch.Tensor]:
        config = preset(
            "tiny", hybrid=True, seed=2, side_warmup_epochs=5, side_path_lr_scale=0.0,
            max_steps=steps, eval_every=steps, warmup_steps=0, weight_decay=0.1,
        )  # fmt: skip
        result = train(
            config, synthetic_split.train, synthetic_split.validation, FEATURE_NAMES,
            progress=False,
        )  # fmt: skip
        return result.model.state_dict()

    # Two runs from the same warm start (same seed), one stepped longer than the other.
    short, long = run(2), run(6)
    side = [n for n in short if n.startswith(("numeric.", "side."))]
    assert side
    for name in side:  # not even weight decay moved them
        assert torch.equal(short[name], long[name])
    # ...while the rest did move: at least one run kept stepped weights, not its warm start
    assert not torch.equal(short["head.weight"], long["head.weight"])


@pytest.mark.parametrize("held", [True, False])
def test_held_side_columns_keep_the_numbers_score_while_the_text_columns_learn(
    synthetic_split: SplitData, held: bool
) -> None:
    def head(steps: int) -> torch.Tensor:
        config = preset(
            "tiny", hybrid=True, seed=2, side_warmup_epochs=5, side_members=2,
            side_path_lr_scale=0.0, side_head_held=held, max_steps=steps, eval_every=steps,
            warmup_steps=0, weight_decay=0.1, patience=5,
        )  # fmt: skip
        result = train(
            config, synthetic_split.train, synthetic_split.validation, FEATURE_NAMES,
            progress=False,
        )  # fmt: skip
        return result.model.head.weight.detach()

    # Two runs from the same warm start (same seed), one stepped longer than the other.
    short, long = head(2), head(6)
    side = 2 * preset("tiny").feature_hidden  # the side paths' columns come last
    # held: not even weight decay moved them; free: the hybrid's steps re-weigh them
    assert torch.equal(short[:, -side:], long[:, -side:]) == held
    # the text's columns learn either way
    assert not torch.equal(short[:, :-side], long[:, :-side])


def test_held_side_columns_are_put_back_and_need_the_linear_head(
    synthetic_split: SplitData,
) -> None:
    model = starting_model(
        preset("tiny", hybrid=True, side_members=2), FEATURE_NAMES, synthetic_split.train
    )
    head = model.head
    assert isinstance(head, torch.nn.Linear)
    before = head.weight.detach().clone()
    held = HeldSideColumns(model)
    with torch.no_grad():
        head.weight.add_(1.0)
    held.restore()
    side = 2 * model.config.feature_hidden
    assert torch.equal(head.weight[:, -side:], before[:, -side:])
    assert torch.equal(head.weight[:, :-side], before[:, :-side] + 1.0)  # the text's: as moved

    fused = starting_model(
        preset("tiny", hybrid=True, fusion_hidden=16), FEATURE_NAMES, synthetic_split.train
    )
    with pytest.raises(TrainingError, match="linear head"):
        HeldSideColumns(fused)


def test_several_side_paths_run_fused_with_the_same_outputs_and_gradients_as_one_by_one() -> None:
    torch.manual_seed(0)
    model = build_model(preset("tiny", hybrid=True, side_members=3), FEATURE_NAMES)
    model.fit_feature_scaling(torch.randn(400, len(FEATURE_NAMES)) * 3)  # one set of bins
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)  # the paths differ, biases too
    scaled = model._scaled(torch.randn(37, len(FEATURE_NAMES)) * 3)

    fused = model.side_hidden(scaled)
    fused.square().sum().backward()
    fused_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    one_by_one = _each_path_hidden(model.side_paths(), scaled, None)
    one_by_one.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]

    assert fused.shape == (37, 3 * model.config.feature_hidden)
    torch.testing.assert_close(fused, one_by_one, atol=1e-5, rtol=1e-5)
    assert len(fused_grads) == len(grads) > 0
    for fused_grad, grad in zip(fused_grads, grads, strict=True):
        torch.testing.assert_close(fused_grad, grad, atol=1e-4, rtol=1e-4)

    # int8 layers cannot be stacked: they run path by path after the shared encoding
    quantized = quantize_int8(model)
    assert isinstance(quantized, RiskClassifier)
    with torch.no_grad():
        torch.testing.assert_close(
            quantized.side_hidden(scaled), _each_path_hidden(quantized.side_paths(), scaled, None)
        )

    # paths whose bins differ cannot share one encoding: each is run on its own bins
    numeric = model.side_paths()[2][0]
    assert numeric is not None
    with torch.no_grad():
        numeric.edges.mul_(0.5)
    with torch.no_grad():
        torch.testing.assert_close(
            model.side_hidden(scaled), _each_path_hidden(model.side_paths(), scaled, None)
        )
        assert not torch.allclose(model.side_hidden(scaled), one_by_one.detach(), atol=1e-3)
