"""The trainer's Prometheus metrics (served with /health and /ready by
:class:`~stream.pipeline.health.MetricsServer`, on ``trainer.metrics_host:metrics_port``)."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge

from stream.trainer.drift import DriftReport
from stream.trainer.report import CycleReport
from stream.trainer.store import TrainerState

_HOLDOUT_FIELDS = (
    "average_precision",
    "roc_auc",
    "precision_at_threshold",
    "recall_at_threshold",
    "alert_threshold",
)


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.labels = Counter(
            "riskstream_trainer_labels",
            "Labels consumed, by outcome (joined, duplicate, expired, unknown, mismatched, "
            "invalid; later joined_late or abandoned for unknown ones).",
            ["outcome"],
            registry=r,
        )
        self.cases = Gauge(
            "riskstream_trainer_cases", "Labelled cases stored.", ["class"], registry=r
        )
        self.new_cases = Gauge(
            "riskstream_trainer_new_cases", "Cases stored since the last fine-tune.", registry=r
        )
        self.unjoined = Gauge(
            "riskstream_trainer_unjoined_labels", "Labels waiting for their record.", registry=r
        )
        self.cycles = Counter(
            "riskstream_trainer_cycles",
            "Fine-tune and shadow-review cycles by result (promoted, shadowed, rejected, "
            "skipped, failed).",
            ["mode", "result"],
            registry=r,
        )
        self.cycle_seconds = Gauge(
            "riskstream_trainer_cycle_seconds", "Duration of the last cycle.", ["mode"], registry=r
        )
        self.holdout = Gauge(
            "riskstream_trainer_holdout_metric",
            "Both models on the last cycle's holdout.",
            ["model", "metric"],
            registry=r,
        )
        self.champion = Gauge(
            "riskstream_trainer_champion_info", "The champion (value 1).", ["version"], registry=r
        )
        self.shadow = Gauge(
            "riskstream_trainer_shadow_info",
            "The shadow challenger, if any (value 1).",
            ["version"],
            registry=r,
        )
        self.feature_psi = Gauge(
            "riskstream_trainer_feature_psi",
            "Input drift per context feature: PSI of recent traffic vs the champion's reference.",
            ["feature"],
            registry=r,
        )
        self.input_drift = Gauge(
            "riskstream_trainer_input_drift_psi",
            "Input drift summaries: features_max, clauses (clause-id mix), tokens (narrative "
            "word mix).",
            ["kind"],
            registry=r,
        )
        self.score_drift = Gauge(
            "riskstream_trainer_score_drift_psi",
            "Score drift: PSI of the champion's recent scores vs its reference scores.",
            registry=r,
        )
        self.drift_rows = Gauge(
            "riskstream_trainer_drift_sample_rows", "Recent events in the drift sample.", registry=r
        )

    def record_state(self, state: TrainerState, unjoined: int) -> None:
        self.cases.labels("suspicious").set(state.suspicious)
        self.cases.labels("legitimate").set(state.legitimate)
        self.new_cases.set(state.new_cases)
        self.unjoined.set(unjoined)

    def record_cycle(self, report: CycleReport, result: str) -> None:
        self.cycles.labels(report.mode, result).inc()
        self.cycle_seconds.labels(report.mode).set(report.seconds)
        for model, values in (
            ("champion", report.champion_metrics),
            ("challenger", report.challenger_metrics),
        ):
            for name in _HOLDOUT_FIELDS:
                value = (values or {}).get(name)
                if value is not None:
                    self.holdout.labels(model, name).set(value)

    def set_pointers(self, champion: str | None, shadow: str | None) -> None:
        self.champion.clear()
        if champion:
            self.champion.labels(champion).set(1)
        self.shadow.clear()
        if shadow:
            self.shadow.labels(shadow).set(1)

    def record_drift(self, report: DriftReport) -> None:
        self.drift_rows.set(report.rows)
        for name, value in report.feature_psi.items():
            self.feature_psi.labels(name).set(value)
        self.input_drift.labels("features_max").set(report.max_feature_psi)
        self.input_drift.labels("clauses").set(report.clause_psi)
        self.input_drift.labels("tokens").set(report.token_psi)
        self.score_drift.set(report.score_psi if not math.isnan(report.score_psi) else math.nan)
