"""The steps around training that every caller does the same way: train (or distill) on a
time split → calibrate thresholds on validation days → evaluate on test days → register.

``riskstream model train``, ``model distill``, the quality benchmark and the feedback-loop
trainer all go through :func:`train_and_register`, so a registered model always carries
thresholds calibrated on days it did not train on and metrics from days after those.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.evaluate import EvalReport, evaluate, write_plots
from models.examples import NarrativeSet, SplitData, training_sample
from models.inference import LoadedModel, from_classifier
from models.registry import Registry, TrainingRecord
from models.thresholds import TargetKind, Thresholds
from models.train import TrainResult, calibrate_on, train
from models.train_config import TrainConfig

# Kept with every registered version (``replay.parquet``) for its fine-tunes to replay. 4,000
# legitimate rows beside all suspicious ones is what the feedback-loop experiment measured
# (docs/feedback-loop.md): enough to stop a fine-tune forgetting typologies absent from the
# recent cases, small enough to store with each version (4,579 rows: 0.8 MB of Parquet).
REPLAY_MAX_SUSPICIOUS = 5_000
REPLAY_MAX_LEGITIMATE = 4_000


@dataclass
class RegisteredRun:
    version: str | None
    result: TrainResult
    thresholds: Thresholds
    report: EvalReport
    model: LoadedModel


@dataclass(frozen=True)
class Targets:
    """How thresholds are calibrated and metrics reported."""

    threshold_target: TargetKind = "alert_rate"
    alert_rate: float = 0.01
    precision: float = 0.5


def evaluate_model(
    model: LoadedModel,
    data: NarrativeSet,
    *,
    targets: Targets = Targets(),
    plots_dir: Path | None = None,
    title: str = "",
) -> EvalReport:
    """Score ``data`` with ``model`` and compute the standard metrics (and plots)."""
    predictions = model.predict_batch(data.texts, data.features if model.hybrid else None)
    report = evaluate(
        predictions.scores,
        data.typologies,
        predictions.typologies,
        alert_budget=targets.alert_rate,
        target_precision=targets.precision,
        weights=data.weights,
    )
    if plots_dir is not None:
        write_plots(
            predictions.scores,
            data.typologies,
            plots_dir,
            title=title or model.version,
            threshold=model.alert_threshold,
        )
    return report


def train_and_register(
    split: SplitData,
    config: TrainConfig,
    registry: Registry | None,
    *,
    targets: Targets = Targets(),
    parent_version: str | None = None,
    name: str | None = None,
    run_dir: Path | None = None,
    teacher: LoadedModel | None = None,
    progress: bool = True,
) -> RegisteredRun:
    """Train (distil when ``teacher`` is given), calibrate, evaluate and — when ``registry`` is
    given — write a new version. The caller decides about promotion."""
    if teacher is not None:
        from models.distill import distill

        result = distill(
            teacher,
            config,
            split.train,
            split.validation,
            split.feature_names,
            run_dir=run_dir,
            progress=progress,
        )
    else:
        result = train(
            config,
            split.train,
            split.validation,
            split.feature_names,
            run_dir=run_dir,
            progress=progress,
        )
    thresholds = calibrate_on(
        result.model,
        result.tokenizer,
        split.validation,
        target=targets.threshold_target,
        alert_rate=targets.alert_rate,
        precision=targets.precision,
    )
    loaded = from_classifier(
        result.model, result.tokenizer, thresholds, narrative_spec=split.narrative_spec
    )
    report = evaluate_model(loaded, split.test, targets=targets)
    version = None
    if registry is not None:
        summary: dict[str, Any] = result.summary()
        if teacher is not None:
            summary["teacher_version"] = teacher.version
        version = registry.save(
            model=result.model,
            tokenizer=result.tokenizer,
            narrative_spec=split.narrative_spec,
            training=TrainingRecord(
                created_at=datetime.now(UTC),
                parent_version=parent_version,
                narrative_version=split.narrative_version,
                data_window=split.data_window(),
                seed=config.seed,
                train_config=config.model_dump(mode="json"),
                run_summary=summary,
            ),
            metrics=report.model_dump(mode="json"),
            thresholds=thresholds,
            name=name,
            replay=training_sample(
                split.train, REPLAY_MAX_SUSPICIOUS, REPLAY_MAX_LEGITIMATE, seed=config.seed
            ),
        )
        loaded.version = version
    return RegisteredRun(
        version=version, result=result, thresholds=thresholds, report=report, model=loaded
    )
