"""One feedback cycle: fine-tune a challenger from the champion on labelled cases, judge both
on a time-based holdout, register the challenger if it wins.

    stored cases (Redis) ─┐                       ┌─ train: new cases + replay of older ones
    presumed negatives ───┼─ resolve ─ split by ──┼─ validation: early stopping, thresholds
    (old unlabelled       │  per event  time      └─ holdout: the decision (both models)
     scored events)  ─────┘
    champion weights ─► train(init_from=champion) ─► challenger ─► thresholds (recent traffic)
                                                  └► evaluate both on the holdout ─► decide

Runs in a child process (``stream.trainer.job``) so the worker's event loop and memory stay
untouched; returns a :class:`CycleReport` and leaves pointer moves (promote, shadow) and
announcements to the worker. A challenger is written to the registry only when it wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.examples import NarrativeSet, concat, training_sample
from models.inference import configure_cpu_threads, from_classifier
from models.registry import Registry, StoredModel, TrainingRecord
from models.thresholds import (
    OperatingPoint,
    Thresholds,
    operating_point,
    threshold_for_alert_rate,
    threshold_for_precision,
)
from models.train import TrainResult, train
from models.train_config import TrainConfig
from models.workflow import REPLAY_MAX_LEGITIMATE, REPLAY_MAX_SUSPICIOUS
from schemas.features import FEATURE_NAMES
from stream.pipeline.records import ScoredRecord
from stream.settings import Settings, TrainerSettings
from stream.trainer import drift
from stream.trainer.cases import (
    LabelledCase,
    class_counts,
    resolve_by_event,
    since,
)
from stream.trainer.cycle_cases import CasePlan, plan_cases, read_cases
from stream.trainer.promotion import HoldoutMetrics, Promotion, decide, holdout_metrics
from stream.trainer.report import CycleReport, Mode
from stream.trainer.served import ServedModel, event_day, narrative_set

log = logging.getLogger(__name__)

# Fewer recent events than this and an alert-rate threshold is not worth calibrating on them.
_MIN_TRAFFIC_FOR_THRESHOLD = 200


def _day_range(cases: Sequence[LabelledCase]) -> tuple[str, str]:
    if not cases:
        return ("", "")
    return (
        event_day(cases[0].event_time_ms).isoformat(),
        event_day(cases[-1].event_time_ms).isoformat(),
    )


def finetune_config(parent: StoredModel, settings: TrainerSettings) -> TrainConfig:
    """The champion's own training configuration, shortened into a fine-tune: fewer steps
    (the schedule's warmup and cosine decay shrink with them), every case kept (no legitimate
    subsampling: the cases are few), a fixed seed. The peak learning rate stays the
    champion's unless ``finetune_learning_rate`` says otherwise: a lower one leaves a
    typology the champion missed unlearned (see docs/feedback-loop.md, "One cycle", step 5)."""
    known = {k: v for k, v in parent.training.train_config.items() if k in TrainConfig.model_fields}
    base = TrainConfig.model_validate(known)
    steps = settings.finetune_steps
    return base.model_copy(
        update={
            "max_steps": steps,
            "eval_every": max(1, steps // 3),
            "warmup_steps": min(base.warmup_steps, steps // 10),
            "learning_rate": settings.finetune_learning_rate or base.peak_lr(),
            "batch_size": settings.finetune_batch_size,
            "patience": 2,
            "seed": settings.finetune_seed,
            "legit_sample_rate": 1.0,
            "validation_legit_sample_rate": 1.0,
            "cpu_threads": settings.finetune_threads,
        }
    )


def challenger_thresholds(
    like: Thresholds,
    traffic_scores: NDArray[np.floating],
    validation_scores: NDArray[np.floating],
    validation_labels: NDArray[np.bool_],
) -> Thresholds:
    """Thresholds for the challenger, aiming at the champion's targets.

    An alert-rate threshold needs the score distribution of ordinary traffic, not of labelled
    cases (which over-represent alerts): it is set on the challenger's scores of a random
    sample of recent scored events, which needs no labels. Precision and recall of the
    operating points are measured on the validation cases; with presumed negatives
    under-sampled they read higher than on live traffic (for both models alike)."""
    traffic = np.asarray(traffic_scores, dtype=np.float64)
    if len(traffic) >= _MIN_TRAFFIC_FOR_THRESHOLD:
        rate_threshold = threshold_for_alert_rate(traffic, like.target_alert_rate)
        observed_rate = float(np.mean(traffic >= rate_threshold))
    else:
        rate_threshold = threshold_for_alert_rate(validation_scores, like.target_alert_rate)
        observed_rate = float(np.mean(np.asarray(validation_scores) >= rate_threshold))
    on_validation = operating_point(validation_scores, validation_labels, rate_threshold)
    at_rate = OperatingPoint(
        threshold=rate_threshold,
        alert_rate=observed_rate,
        precision=on_validation.precision,
        recall=on_validation.recall,
    )
    precision_threshold = threshold_for_precision(
        validation_scores, validation_labels, like.target_precision
    )
    return Thresholds(
        target=like.target,
        target_alert_rate=like.target_alert_rate,
        target_precision=like.target_precision,
        at_alert_rate=at_rate,
        at_precision=operating_point(validation_scores, validation_labels, precision_threshold),
        calibration_events=max(1, len(traffic) if len(traffic) else len(validation_scores)),
    )


def champion_training_sample(
    registry: Registry, version: str, settings: TrainerSettings, feature_names: Sequence[str]
) -> NarrativeSet | None:
    """The champion's stored sample of its own training data (``replay.parquet``), replayed
    beside the cases so a fine-tune does not forget what the cases do not show (see
    docs/feedback-loop.md, "One cycle", step 3). None when disabled, when the version stored
    none, or of another feature layout."""
    if not settings.replay_champion_data:
        return None
    sample = registry.replay(version)
    if sample is None:
        log.info("%s has no stored training sample to replay", version)
        return None
    if len(sample) and sample.features.shape[1] != len(feature_names):
        log.warning("not replaying %s's training sample: another feature layout", version)
        return None
    return sample


def _skipped(mode: Mode, reason: str, **fields: Any) -> CycleReport:
    log.info("cycle skipped: %s", reason)
    return CycleReport(mode=mode, decided=False, skip_reason=reason, **fields)


def _labels(cases: Sequence[LabelledCase]) -> NDArray[np.bool_]:
    return np.array([c.is_suspicious for c in cases], dtype=bool)


def run_finetune(settings: Settings, *, progress: bool = False) -> CycleReport:
    """Fine-tune, judge, and register the challenger if it wins (see the module docstring)."""
    started = time.perf_counter()
    ts = settings.trainer
    configure_cpu_threads(ts.finetune_threads)
    registry = Registry(settings.model.registry_dir)
    champion_version = registry.champion()
    if champion_version is None:
        return _skipped("finetune", "no champion to fine-tune from")
    data = read_cases(settings)
    suspicious, legitimate = class_counts(data.labelled)
    counts: dict[str, Any] = {"labelled_suspicious": suspicious, "labelled_legitimate": legitimate}
    if min(suspicious, legitimate) < ts.min_labels_per_class:
        return _skipped(
            "finetune",
            f"{suspicious} suspicious / {legitimate} legitimate labelled events; "
            f"min_labels_per_class is {ts.min_labels_per_class}",
            champion=champion_version,
            data=counts,
            seq=data.seq,
        )
    plan = plan_cases(data, ts, counts)
    if plan.problem is not None:
        return _skipped(
            "finetune", plan.problem, champion=champion_version, data=counts, seq=data.seq
        )

    champion = ServedModel.load(registry, champion_version)
    fit = _fine_tune(registry, champion, plan, data.traffic, ts, counts, progress)
    champion_metrics, challenger_metrics, decision = _judge(
        champion, fit.challenger, plan.split.holdout, ts
    )
    version = None
    if decision.promote:
        version = _register(
            registry, champion, fit, plan, data.traffic, counts, champion_metrics,
            challenger_metrics, ts,
        )  # fmt: skip
    return CycleReport(
        mode="finetune",
        decided=True,
        promote=decision.promote,
        reason=decision.reason,
        champion=champion_version,
        challenger=version,
        metric=ts.promotion_metric,
        champion_metrics=champion_metrics.as_dict(),
        challenger_metrics=challenger_metrics.as_dict(),
        data={**counts, "train_seconds": round(fit.result.seconds, 1), "steps": fit.result.steps},
        seq=data.seq,
        seconds=round(time.perf_counter() - started, 1),
    )


@dataclass
class _FineTuned:
    result: TrainResult
    challenger: ServedModel
    """The challenger with its own thresholds (version "challenger" until registered)."""
    config: TrainConfig
    train_set: NarrativeSet
    traffic_scores: NDArray[np.float32]


def _fine_tune(
    registry: Registry,
    champion: ServedModel,
    plan: CasePlan,
    traffic: Sequence[ScoredRecord],
    ts: TrainerSettings,
    counts: dict[str, Any],
    progress: bool,
) -> _FineTuned:
    """Train the challenger from the champion on the planned cases (plus the champion's own
    training sample), then set its thresholds to the champion's targets."""
    champion_version = champion.loaded.version
    case_set = narrative_set(champion, plan.train_cases)
    champion_replay = champion_training_sample(
        registry, champion_version, ts, champion.feature_names
    )
    train_set = concat([champion_replay, case_set]) if champion_replay else case_set
    counts["train_champion_replay"] = len(champion_replay) if champion_replay else 0
    validation_set = narrative_set(champion, plan.split.validation)
    config = finetune_config(champion.stored, ts)
    log.info(
        "fine-tuning %s on %d cases (%d new, %d replayed) + %d of its training examples, "
        "%d steps",
        champion_version, len(plan.train_cases), counts["train_new"], counts["train_replay"],
        counts["train_champion_replay"], config.max_steps,
    )  # fmt: skip
    result = train(
        config,
        train_set,
        validation_set,
        champion.feature_names,
        init_from=champion.stored.model if ts.challenger_init == "champion" else None,
        progress=progress,
    )
    candidate = from_classifier(
        result.model, result.tokenizer, champion.stored.thresholds, version="challenger",
        narrative_spec=champion.stored.narrative_spec,
    )  # fmt: skip
    challenger = ServedModel(champion.stored, candidate, champion.spec)
    validation_scores = challenger.scores(plan.split.validation)
    traffic_scores = challenger.scores(traffic)
    candidate.thresholds = challenger_thresholds(
        champion.stored.thresholds,
        traffic_scores,
        validation_scores,
        _labels(plan.split.validation),
    )
    return _FineTuned(result, challenger, config, train_set, traffic_scores)


def _judge(
    champion: ServedModel,
    challenger: ServedModel,
    holdout: Sequence[LabelledCase],
    ts: TrainerSettings,
) -> tuple[HoldoutMetrics, HoldoutMetrics, Promotion]:
    """Both models on the holdout, each at its own alert threshold, and the decision."""
    labels = _labels(holdout)
    champion_metrics = holdout_metrics(
        champion.scores(holdout), labels, champion.loaded.alert_threshold
    )
    challenger_metrics = holdout_metrics(
        challenger.scores(holdout), labels, challenger.loaded.alert_threshold
    )
    decision = decide(
        champion_metrics,
        challenger_metrics,
        metric=ts.promotion_metric,
        max_precision_loss=ts.max_precision_loss,
        min_improvement=ts.min_improvement,
    )
    return champion_metrics, challenger_metrics, decision


def _register(
    registry: Registry,
    champion: ServedModel,
    fit: _FineTuned,
    plan: CasePlan,
    traffic: Sequence[ScoredRecord],
    counts: dict[str, Any],
    champion_metrics: HoldoutMetrics,
    challenger_metrics: HoldoutMetrics,
    ts: TrainerSettings,
) -> str:
    """Write the winning challenger to the registry; its new version."""
    split, config = plan.split, fit.config
    return registry.save(
        model=fit.result.model,
        tokenizer=fit.result.tokenizer,
        narrative_spec=champion.stored.narrative_spec,
        training=TrainingRecord(
            created_at=datetime.now(UTC),
            parent_version=champion.loaded.version,
            narrative_version=champion.stored.narrative_version,
            data_window={
                "train": _day_range(plan.train_cases),
                "validation": _day_range(split.validation),
                "test": _day_range(split.holdout),
            },
            seed=config.seed,
            train_config=config.model_dump(mode="json"),
            run_summary={
                **fit.result.summary(),
                "feedback": {
                    "init": ts.challenger_init,
                    "validation_start_ms": split.validation_start_ms,
                    "holdout_start_ms": split.holdout_start_ms,
                    "holdout_starts": split.holdout_starts,
                    "cases": counts,
                },
            },
        ),
        metrics={
            **challenger_metrics.as_dict(),
            "holdout": challenger_metrics.as_dict(),
            "champion_on_holdout": champion_metrics.as_dict(),
        },
        thresholds=fit.challenger.loaded.thresholds,
        name="ft",
        reference_stats=traffic_reference(traffic, fit.challenger, fit.traffic_scores),
        # What its own fine-tunes will replay: what it learned from, bounded.
        replay=training_sample(
            fit.train_set, REPLAY_MAX_SUSPICIOUS, REPLAY_MAX_LEGITIMATE, seed=config.seed
        ),
    )


def traffic_reference(
    traffic: Sequence[ScoredRecord], model: ServedModel, scores: NDArray[np.floating]
) -> dict[str, Any] | None:
    """Reference statistics for drift: the recent traffic the model was calibrated on."""
    if not traffic:
        return None
    return drift.reference_stats(
        np.asarray([r.features for r in traffic], dtype=np.float64),
        FEATURE_NAMES,
        [r.clause_ids for r in traffic],
        model.texts(traffic),
        scores,
        model_version=None,  # the version is not known before it is registered
    )


def run_review(settings: Settings, challenger_version: str) -> CycleReport:
    """The shadow re-check: champion and shadow challenger judged again, on every case from
    the challenger's holdout start on - its holdout plus labels that arrived while it scored
    in shadow, none of which it trained on."""
    started = time.perf_counter()
    ts = settings.trainer
    configure_cpu_threads(ts.finetune_threads)
    registry = Registry(settings.model.registry_dir)
    champion_version = registry.champion()
    if champion_version is None:
        return _skipped("review", "no champion")
    challenger = ServedModel.load(registry, challenger_version)
    feedback = challenger.stored.training.run_summary.get("feedback", {})
    # A version that is no fine-tune (no holdout starts) is judged on every case.
    starts: dict[str, int] = feedback.get("holdout_starts", {})
    data = read_cases(settings)
    holdout = since(resolve_by_event(data.labelled + data.negatives), starts)
    held_s, held_l = class_counts(holdout)
    fields: dict[str, Any] = {
        "champion": champion_version,
        "challenger": challenger_version,
        "data": {"holdout": len(holdout), "holdout_suspicious": held_s},
        "seq": data.seq,
    }
    if min(held_s, held_l) < ts.min_holdout_per_class:
        return _skipped("review", f"holdout holds {held_s} / {held_l} cases", **fields)
    champion = ServedModel.load(registry, champion_version)
    champion_metrics, challenger_metrics, decision = _judge(champion, challenger, holdout, ts)
    return CycleReport(
        mode="review",
        decided=True,
        promote=decision.promote,
        reason=decision.reason,
        metric=ts.promotion_metric,
        champion_metrics=champion_metrics.as_dict(),
        challenger_metrics=challenger_metrics.as_dict(),
        seconds=round(time.perf_counter() - started, 1),
        **fields,
    )
