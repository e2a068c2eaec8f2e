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
from datetime import UTC, date, datetime
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from models.examples import NarrativeSet, concat, training_sample
from models.inference import LoadedModel, configure_cpu_threads, from_classifier
from models.registry import Registry, StoredModel, TrainingRecord
from models.thresholds import (
    OperatingPoint,
    Thresholds,
    operating_point,
    threshold_for_alert_rate,
    threshold_for_precision,
)
from models.train import TrainConfig, train
from models.workflow import REPLAY_MAX_LEGITIMATE, REPLAY_MAX_SUSPICIOUS
from schemas import TransactionEvent, decode
from schemas.errors import DecodeError
from stream.context.features import FEATURE_NAMES, ContextFeatures, select_features
from stream.context.story import unpack_story
from stream.narrative import NarrativeSpec, build_narrative, default_spec
from stream.narrative.builder import SEPARATOR
from stream.redis_client import connect
from stream.scorer.records import ScoredRecord
from stream.settings import Settings, TrainerSettings
from stream.trainer import drift
from stream.trainer.cases import (
    CaseSplit,
    LabelledCase,
    class_counts,
    composition,
    labels_complete,
    presumed_negatives,
    replay_sample,
    resolve_by_event,
    since,
    split_by_time,
)
from stream.trainer.promotion import decide, holdout_metrics
from stream.trainer.report import CycleReport, Mode
from stream.trainer.store import MAX_UNJOINED, CaseStore, RecordSampler

log = logging.getLogger(__name__)

# Fewer recent events than this and an alert-rate threshold is not worth calibrating on them.
_MIN_TRAFFIC_FOR_THRESHOLD = 200


class NarratedItem(Protocol):
    """A labelled case or a scored record: what a narrative can be (re)built from."""

    @property
    def event(self) -> dict[str, Any]: ...
    @property
    def narrative(self) -> str: ...
    @property
    def narrative_version(self) -> str: ...
    @property
    def features(self) -> tuple[float, ...]: ...
    @property
    def clause_ids(self) -> tuple[str, ...]: ...
    @property
    def event_time_ms(self) -> int: ...
    @property
    def story(self) -> str: ...


@dataclass
class ServedModel:
    """A registry version with what scoring and narrating for it need."""

    stored: StoredModel
    loaded: LoadedModel
    spec: NarrativeSpec

    @classmethod
    def load(cls, registry: Registry, version: str) -> ServedModel:
        stored = registry.load(version)
        spec = (
            NarrativeSpec.from_json(orjson.dumps(stored.narrative_spec))
            if stored.narrative_spec
            else default_spec()
        )
        loaded = from_classifier(
            stored.model,
            stored.tokenizer,
            stored.thresholds,
            version=version,
            narrative_spec=stored.narrative_spec,
        )
        return cls(stored, loaded, spec)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The numeric features this model (and a fine-tune of it) reads, in its order."""
        return tuple(self.stored.model.config.feature_names) or self.spec.feature_names

    def features(self, items: Sequence[NarratedItem]) -> NDArray[np.float32]:
        """The items' stored features (every feature the scorer computes), as this model
        reads them."""
        rows = np.asarray([i.features for i in items], dtype=np.float32)
        return select_features(rows.reshape(len(items), len(FEATURE_NAMES)), self.feature_names)

    def texts(self, items: Sequence[NarratedItem]) -> list[str]:
        """The narratives as this model reads them: the stored text when it was written with
        this model's spec, else rebuilt from the stored event and features with it."""
        out = []
        for item in items:
            if item.narrative_version == self.spec.version:
                out.append(item.narrative)
                continue
            try:
                event = decode(TransactionEvent, orjson.dumps(item.event))
            except DecodeError as exc:  # stored by the scorer after decoding: schema moved on
                log.warning("keeping the stored narrative of an undecodable event: %s", exc)
                out.append(item.narrative)
                continue
            story = unpack_story(bytes.fromhex(item.story))
            out.append(
                build_narrative(event, ContextFeatures(*item.features), self.spec, story).text
            )
        return out

    def scores(self, items: Sequence[NarratedItem]) -> NDArray[np.float32]:
        if not items:
            return np.zeros(0, dtype=np.float32)
        return self.loaded.predict_batch(self.texts(items), self.features(items)).scores


def narrative_set(model: ServedModel, cases: Sequence[LabelledCase]) -> NarrativeSet:
    texts = model.texts(cases)
    clauses = []
    for case, text in zip(cases, texts, strict=True):
        parts = text.split(SEPARATOR)
        pairs = (
            list(zip(case.clause_ids, parts, strict=True))
            if len(parts) == len(case.clause_ids)
            else []
        )
        clauses.append(pairs)
    return NarrativeSet(
        event_ids=[c.event_id for c in cases],
        days=[_day(c.event_time_ms) for c in cases],
        texts=texts,
        clauses=clauses,
        features=model.features(cases),
        typologies=[c.target for c in cases],
    )


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _day_range(cases: Sequence[LabelledCase]) -> tuple[str, str]:
    if not cases:
        return ("", "")
    return (_day(cases[0].event_time_ms).isoformat(), _day(cases[-1].event_time_ms).isoformat())


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


@dataclass
class CaseData:
    """What a cycle reads from Redis."""

    labelled: list[LabelledCase]
    """One case per labelled event (resolved)."""
    seq_by_label: dict[str, int]
    negatives: list[LabelledCase]
    traffic: list[ScoredRecord]
    """A random sample of recent scored events (thresholds, drift reference)."""
    seq: int
    finetune_seq: int
    clock_ms: int
    """The stream clock (newest label time) the presumed negatives were aged against."""


def read_cases(settings: Settings) -> CaseData:
    ts = settings.trainer
    client = connect(settings.redis)
    try:
        store = CaseStore(
            client,
            settings.context.namespace,
            max_cases=ts.max_cases,
            ttl_s=ts.cases_ttl_days * 86_400,
            max_unjoined=MAX_UNJOINED,
        )
        state = store.state()
        stored = store.load_cases()
        sample = RecordSampler(client, settings.context.namespace, ts.records_scan_budget).sample(
            2 * ts.max_presumed_negatives + ts.drift_sample_size, seed=ts.finetune_seed
        )
    finally:
        client.close()
    labelled = resolve_by_event(case for _, case in stored)
    labelled_ids = {c.event_id for c in labelled}
    clock_ms = state.clock_ms or max((r.event_time_ms for r in sample), default=0)
    negatives = presumed_negatives(
        sample,
        labelled_ids,
        clock_ms=clock_ms,
        maturity_ms=int(ts.negative_maturity_days * 86_400_000),
        limit=ts.max_presumed_negatives,
        seed=ts.finetune_seed,
    )
    newest = max((r.event_time_ms for r in sample), default=0)
    recent = [r for r in sample if r.event_time_ms >= newest - ts.drift_window_hours * 3_600_000]
    return CaseData(
        labelled=labelled,
        seq_by_label={case.label_id: seq for seq, case in stored},
        negatives=negatives,
        traffic=recent[: ts.drift_sample_size],
        seq=state.seq,
        finetune_seq=state.finetune_seq,
        clock_ms=clock_ms,
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


def check_split(split: CaseSplit, settings: TrainerSettings) -> str | None:
    """Why this split cannot support a fine-tune and a fair decision, or None."""
    held_s, held_l = class_counts(split.holdout)
    if min(held_s, held_l) < settings.min_holdout_per_class:
        return (
            f"holdout holds {held_s} suspicious / {held_l} legitimate cases; "
            f"min_holdout_per_class is {settings.min_holdout_per_class}"
        )
    val_s, val_l = class_counts(split.validation)
    if val_s == 0 or val_l == 0:
        return f"validation holds {val_s} suspicious / {val_l} legitimate cases: needs both"
    train_s, train_l = class_counts(split.train)
    if train_s == 0 or train_l == 0:
        return f"train holds {train_s} suspicious / {train_l} legitimate cases: needs both"
    return None


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
    # Only events whose labels are complete are split (see ``labels_complete``): the same
    # maturity the presumed negatives obey, so holdout positives are not mostly the
    # champion's own quickly-dispositioned alerts. Younger labelled events wait.
    complete, waiting = labels_complete(
        data.labelled,
        clock_ms=data.clock_ms,
        maturity_ms=int(ts.negative_maturity_days * 86_400_000),
    )
    split = split_by_time(complete + data.negatives, ts.holdout_share, ts.validation_share)
    problem = check_split(split, ts)
    new = [
        c for c in split.train if data.seq_by_label.get(c.label_id, data.seq) > data.finetune_seq
    ]
    older = [
        c for c in split.train if data.seq_by_label.get(c.label_id, data.seq) <= data.finetune_seq
    ]
    replay = replay_sample(older, ts.replay_buffer_size, ts.finetune_seed)
    train_cases = sorted(new + replay, key=lambda c: (c.event_time_ms, c.event_id))
    counts.update(
        presumed_negatives=len(data.negatives),
        labelled_waiting=len(waiting),
        train_new=len(new),
        train_replay=len(replay),
        validation=len(split.validation),
        holdout=len(split.holdout),
        holdout_suspicious=class_counts(split.holdout)[0],
        traffic_sample=len(data.traffic),
        holdout_start=datetime.fromtimestamp(split.holdout_start_ms / 1000, UTC).isoformat(),
        train_composition=composition(train_cases),
        holdout_composition=composition(split.holdout),
    )
    if problem is not None:
        return _skipped("finetune", problem, champion=champion_version, data=counts, seq=data.seq)

    champion = ServedModel.load(registry, champion_version)
    case_set = narrative_set(champion, train_cases)
    champion_replay = champion_training_sample(
        registry, champion_version, ts, champion.feature_names
    )
    train_set = concat([champion_replay, case_set]) if champion_replay else case_set
    counts["train_champion_replay"] = len(champion_replay) if champion_replay else 0
    validation_set = narrative_set(champion, split.validation)
    config = finetune_config(champion.stored, ts)
    log.info(
        "fine-tuning %s on %d cases (%d new, %d replayed) + %d of its training examples, "
        "%d steps",
        champion_version, len(train_cases), len(new), len(replay),
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
    validation_scores = challenger.scores(split.validation)
    traffic_scores = challenger.scores(data.traffic)
    thresholds = challenger_thresholds(
        champion.stored.thresholds, traffic_scores, validation_scores, _labels(split.validation)
    )
    candidate.thresholds = thresholds

    holdout_labels = _labels(split.holdout)
    champion_metrics = holdout_metrics(
        champion.scores(split.holdout), holdout_labels, champion.loaded.alert_threshold
    )
    challenger_metrics = holdout_metrics(
        challenger.scores(split.holdout), holdout_labels, thresholds.alert_threshold
    )
    decision = decide(
        champion_metrics,
        challenger_metrics,
        metric=ts.promotion_metric,
        max_precision_loss=ts.max_precision_loss,
        min_improvement=ts.min_improvement,
    )
    version = None
    if decision.promote:
        version = registry.save(
            model=result.model,
            tokenizer=result.tokenizer,
            narrative_spec=champion.stored.narrative_spec,
            training=TrainingRecord(
                created_at=datetime.now(UTC),
                parent_version=champion_version,
                narrative_version=champion.stored.narrative_version,
                data_window={
                    "train": _day_range(train_cases),
                    "validation": _day_range(split.validation),
                    "test": _day_range(split.holdout),
                },
                seed=config.seed,
                train_config=config.model_dump(mode="json"),
                run_summary={
                    **result.summary(),
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
            thresholds=thresholds,
            name="ft",
            reference_stats=traffic_reference(data.traffic, challenger, traffic_scores),
            # What its own fine-tunes will replay: what it learned from, bounded.
            replay=training_sample(
                train_set, REPLAY_MAX_SUSPICIOUS, REPLAY_MAX_LEGITIMATE, seed=config.seed
            ),
        )
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
        data={**counts, "train_seconds": round(result.seconds, 1), "steps": result.steps},
        seq=data.seq,
        seconds=round(time.perf_counter() - started, 1),
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
