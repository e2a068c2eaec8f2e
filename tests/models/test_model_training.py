"""A tiny student trained on synthetic narratives (shared session fixture, ~15 s)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from models.distill import teacher_logits
from models.evaluate import evaluate
from models.examples import NarrativeSet, SplitData
from models.inference import LoadedModel, from_classifier
from models.reasons import explain
from models.thresholds import Thresholds
from models.train import AutocastPlan, TrainResult, autocast_plan, distill_loss, improves, train
from models.train_config import preset
from schemas.narrative import Clause, Narrative


def narrative_at(data: NarrativeSet, row: int) -> Narrative:
    """Row ``row`` of a dataset as the narrative the builder made (what reasons explain)."""
    clauses = tuple(Clause(clause_id, text) for clause_id, text in data.clauses[row])
    return Narrative(text=data.texts[row], clauses=clauses, features=(), version="test")


def alerted_narratives(
    model: LoadedModel, data: NarrativeSet, limit: int
) -> tuple[list[Narrative], list[float]]:
    """The first ``limit`` alerted rows of ``data`` as narratives, with their scores."""
    scores = model.predict_batch(data.texts).scores
    alerted = np.flatnonzero(scores >= model.alert_threshold)[:limit]
    assert len(alerted) > 0
    return [narrative_at(data, i) for i in alerted], [float(scores[i]) for i in alerted]


def test_tiny_model_beats_a_constant_predictor_on_later_days(
    trained_tiny: TrainResult, synthetic_split: SplitData, tiny_thresholds: Thresholds
) -> None:
    assert min(synthetic_split.test.days) > max(synthetic_split.train.days)
    model = from_classifier(trained_tiny.model, trained_tiny.tokenizer, tiny_thresholds)
    predictions = model.predict_batch(synthetic_split.test.texts)
    report = evaluate(predictions.scores, synthetic_split.test.typologies, predictions.typologies)
    # a constant predictor's average precision is the prevalence
    assert report.average_precision > report.prevalence + 0.3
    assert report.roc_auc > 0.8
    assert trained_tiny.best_validation_ap > 0.5
    assert trained_tiny.history[0]["step"] == trained_tiny.config.eval_every


def test_reasons_name_clauses_of_the_alerted_narrative(
    trained_tiny: TrainResult, synthetic_split: SplitData, tiny_thresholds: Thresholds
) -> None:
    model = from_classifier(trained_tiny.model, trained_tiny.tokenizer, tiny_thresholds)
    narratives, _ = alerted_narratives(model, synthetic_split.test, 5)
    reasons = explain(model, narratives, top_k=2)
    assert len(reasons) == len(narratives)
    assert any(reasons)
    for narrative, found in zip(narratives, reasons, strict=True):
        assert len(found) <= 2
        ids = {c.id for c in narrative.clauses}
        for reason in found:
            assert reason.clause in ids
            assert reason.text in narrative.text
            assert reason.weight > 0
        assert [r.weight for r in found] == sorted((r.weight for r in found), reverse=True)


def test_checkpoint_resumes_where_training_stopped(
    tmp_path: Path, synthetic_split: SplitData
) -> None:
    config = preset("tiny", hybrid=True, max_steps=40, eval_every=20, patience=5)
    first = train(
        config,
        synthetic_split.train,
        synthetic_split.validation,
        synthetic_split.feature_names,
        run_dir=tmp_path,
        progress=False,
    )
    assert (tmp_path / "checkpoint.safetensors").is_file()
    log_lines = (tmp_path / "run_log.jsonl").read_text().splitlines()
    assert len(log_lines) == 2
    longer = config.model_copy(update={"max_steps": 60})
    resumed = train(
        longer,
        synthetic_split.train,
        synthetic_split.validation,
        synthetic_split.feature_names,
        run_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert [h["step"] for h in resumed.history] == [60]
    assert first.steps == 40


def test_distilled_student_learns_from_the_teacher(
    trained_tiny: TrainResult, synthetic_split: SplitData, tiny_thresholds: Thresholds
) -> None:
    teacher = from_classifier(trained_tiny.model, trained_tiny.tokenizer, tiny_thresholds)
    calls: list[int] = []

    def counting_teacher(rows: NarrativeSet) -> NDArray[np.float32]:
        calls.append(len(rows))
        return teacher_logits(teacher, rows)

    config = preset("tiny", hybrid=False, seed=5, max_steps=150, eval_every=75)
    student = train(
        config,
        synthetic_split.train,
        synthetic_split.validation,
        synthetic_split.feature_names,
        teacher=counting_teacher,
        progress=False,
    )
    assert calls == [len(synthetic_split.train)]  # teacher scored once, all rows (rate 1.0)
    scores = from_classifier(student.model, student.tokenizer, tiny_thresholds).predict_batch(
        synthetic_split.test.texts
    )
    report = evaluate(scores.scores, synthetic_split.test.typologies)
    assert report.average_precision > report.prevalence + 0.3


def test_distillation_loss_is_zero_when_student_matches_teacher() -> None:
    logits = torch.randn(8, 11)
    weights = torch.ones(8)
    assert distill_loss(logits, logits, weights, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(logits, torch.randn(8, 11) * 3, weights, 2.0).item() > 0.01


def test_descriptive_clauses_are_never_reasons(
    trained_tiny: TrainResult, synthetic_split: SplitData, tiny_thresholds: Thresholds
) -> None:
    from models.reasons import DESCRIPTIVE_CLAUSES

    assert "event" in DESCRIPTIVE_CLAUSES  # the event type says what happened, not why
    model = from_classifier(trained_tiny.model, trained_tiny.tokenizer, tiny_thresholds)
    narratives, _ = alerted_narratives(model, synthetic_split.test, 8)
    everything = explain(model, narratives, top_k=10, descriptive=())
    ranked = {r.clause for found in everything for r in found}
    assert ranked, "some clause raised some score"
    described = {next(iter(ranked))}
    filtered = explain(model, narratives, top_k=10, descriptive=described)
    for before, after in zip(everything, filtered, strict=True):
        assert [r for r in before if r.clause not in described] == after


def test_reasons_measured_from_the_alerts_own_scores_are_the_same_reasons(
    trained_tiny: TrainResult, synthetic_split: SplitData, tiny_thresholds: Thresholds
) -> None:
    """The scorer passes each alert's score instead of having its full text scored again:
    the same clauses, with the same weights up to the float noise of another batch."""
    model = from_classifier(trained_tiny.model, trained_tiny.tokenizer, tiny_thresholds)
    narratives, scores = alerted_narratives(model, synthetic_split.test, 6)

    rescored = explain(model, narratives, top_k=3)
    given = explain(model, narratives, top_k=3, scores=scores)
    assert any(given)
    for before, after in zip(rescored, given, strict=True):
        assert [r.clause for r in before] == [r.clause for r in after]
        assert [r.weight for r in after] == pytest.approx([r.weight for r in before], abs=1e-4)
    with pytest.raises(ValueError, match=f"{len(narratives) + 1} scores for"):
        explain(model, narratives, scores=[0.9] * (len(narratives) + 1))


def test_a_tie_in_validation_ap_goes_to_the_lower_log_loss() -> None:
    # a saturated validation set: AP 1.0 at every evaluation, the loss still falling
    assert improves(1.0, 0.20, best_ap=1.0, best_loss=0.35)
    assert not improves(1.0, 0.40, best_ap=1.0, best_loss=0.35)
    # AP decides whenever it differs, whatever the loss
    assert improves(0.81, 0.90, best_ap=0.80, best_loss=0.10)
    assert not improves(0.79, 0.01, best_ap=0.80, best_loss=0.10)
    # the first evaluation always improves on the start
    assert improves(0.0, 5.0, best_ap=-1.0, best_loss=float("inf"))


def test_mixed_precision_is_bf16_where_the_gpu_has_it_and_scaled_fp16_otherwise() -> None:
    cuda = torch.device("cuda")
    assert autocast_plan(torch.device("cpu")) == AutocastPlan(dtype=None, scale_gradients=False)
    assert autocast_plan(cuda, bf16_supported=True) == AutocastPlan(torch.bfloat16, False)
    assert autocast_plan(cuda, bf16_supported=False) == AutocastPlan(torch.float16, True)
