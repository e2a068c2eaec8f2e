"""The feedback loop's periodic work: when to fine-tune, running the fine-tune in a child
process, acting on its decision, and measuring drift.

Every ``trainer.check_every_s`` the worker's timer calls :meth:`FeedbackLoop.tick`:

1. labels that arrived before their event was scored are joined if they can be now;
2. a shadow challenger whose time is up is re-judged (``review``); otherwise, when
   ``finetune_every_labels`` new cases arrived, or ``finetune_every_minutes`` passed with at
   least one, and the guardrail (``min_labels_per_class``) holds, a fine-tune starts;
3. every ``drift_every_minutes`` drift is measured.

A cycle runs as ``python -m stream.trainer.job`` in a child process, started from a
background task: the event loop keeps consuming labels while it trains, only one cycle runs
at a time, and stopping the worker terminates the child (registry writes are atomic, so a
killed fine-tune leaves nothing half-written). The child decides and registers a winning
challenger; this process moves pointers (promote, shadow), tells scorers, records the history
line and logs one structured line with both models' metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import KafkaException
from pydantic import ValidationError

from models.errors import ModelError
from models.registry import Registry
from schemas.features import FEATURE_NAMES
from schemas.model_notice import NoticeAction
from stream.kafka.model_notices import announce_champion
from stream.settings import Settings, to_env
from stream.trainer import drift
from stream.trainer.errors import FineTuneFailed
from stream.trainer.ingest import LabelIngestor
from stream.trainer.metrics import TrainerMetrics
from stream.trainer.report import CycleReport, Mode
from stream.trainer.store import CaseStore, RecordSampler, TrainerState

log = logging.getLogger(__name__)

_TERMINATE_GRACE_S = 10.0


def due(state: TrainerState, now_ms: int, settings: Settings) -> str | None:
    """Why a fine-tune should start now, or None. Pure."""
    ts = settings.trainer
    if state.new_cases <= 0:
        return None
    if min(state.suspicious, state.legitimate) < ts.min_labels_per_class:
        return None
    if state.new_cases >= ts.finetune_every_labels:
        return f"{state.new_cases} new cases (finetune_every_labels={ts.finetune_every_labels})"
    if state.finetune_at_ms == 0:
        return f"{state.new_cases} new cases and no fine-tune yet"
    waited_min = (now_ms - state.finetune_at_ms) / 60_000
    if waited_min >= ts.finetune_every_minutes:
        return f"{state.new_cases} new cases and {waited_min:.0f} min since the last fine-tune"
    return None


def review_due(state: TrainerState, shadow: str | None, now_ms: int, settings: Settings) -> bool:
    """A shadow challenger put in place by the trainer has scored long enough. Pure."""
    if shadow is None or state.shadow_since_ms == 0:
        return False
    return now_ms - state.shadow_since_ms >= settings.trainer.shadow_minutes * 60_000


class FeedbackLoop:
    def __init__(
        self,
        settings: Settings,
        *,
        cases: CaseStore,
        ingestor: LabelIngestor,
        sampler: RecordSampler,
        metrics: TrainerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._ts = settings.trainer
        self._cases = cases
        self._ingestor = ingestor
        self._sampler = sampler
        self._metrics = metrics
        self._clock = clock
        self._registry = Registry(settings.model.registry_dir)
        self._cycle: asyncio.Task[None] | None = None
        self._drift: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None
        self._last_drift = 0.0

    # --- the timer --------------------------------------------------------------------------

    async def tick(self) -> None:
        await asyncio.to_thread(self._ingestor.retry_unjoined)
        state = await asyncio.to_thread(self._cases.state)
        shadow = self._registry.shadow()
        self._metrics.record_state(state, len(await asyncio.to_thread(self._cases.unjoined)))
        self._metrics.set_pointers(self._registry.champion(), shadow)
        now_ms = int(self._clock() * 1000)
        if not self.cycle_running:
            if review_due(state, shadow, now_ms, self._settings):
                assert shadow is not None
                self._start_cycle("review", f"{shadow} scored in shadow long enough", shadow)
            elif shadow is None or state.shadow_since_ms == 0:
                reason = due(state, now_ms, self._settings)
                if reason is not None:
                    self._start_cycle("finetune", reason, seq=state.seq, now_ms=now_ms)
        drift_running = self._drift is not None and not self._drift.done()
        if (
            not drift_running
            and self._clock() - self._last_drift >= self._ts.drift_every_minutes * 60
        ):
            # In the background: a SCAN over millions of records must not hold up the timer.
            self._last_drift = self._clock()
            self._drift = asyncio.create_task(self._measure_drift_logged(), name="drift")

    async def _measure_drift_logged(self) -> None:
        try:
            await asyncio.to_thread(self.measure_drift)
        except Exception:  # drift is a report: a failure must not take the worker down
            log.exception("drift measurement failed")

    @property
    def cycle_running(self) -> bool:
        return self._cycle is not None and not self._cycle.done()

    def _start_cycle(
        self,
        mode: Mode,
        why: str,
        challenger: str | None = None,
        *,
        seq: int = 0,
        now_ms: int = 0,
    ) -> None:
        log.info("starting a %s cycle: %s", mode, why)
        self._cycle = asyncio.create_task(
            self._run_cycle(mode, challenger, seq, now_ms), name=f"{mode}-cycle"
        )

    async def wait_for_cycle(self) -> None:
        if self._cycle is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._cycle

    async def stop(self) -> None:
        """Cancel a running cycle (its child process is terminated) and drift measurement."""
        if self._drift is not None and not self._drift.done():
            self._drift.cancel()
        if self._cycle is not None and not self._cycle.done():
            self._cycle.cancel()
            await self.wait_for_cycle()

    # --- one cycle ------------------------------------------------------------------------------

    async def _run_cycle(
        self, mode: Mode, challenger: str | None, seq: int, started_ms: int
    ) -> None:
        try:
            report = await self.run_job(mode, challenger)
        except FineTuneFailed as exc:
            self._metrics.cycles.labels(mode, "failed").inc()
            log.error("%s cycle failed, the champion stays: %s", mode, exc)
            report = None
        if mode == "finetune":
            # Marked after the cycle (the job must still see which cases are new) whatever
            # its outcome, so a failing or skipped fine-tune waits for the next trigger
            # rather than starting again at the next tick.
            await asyncio.to_thread(self._cases.mark_finetune, seq, started_ms)
        elif report is None or not report.decided:
            # A review that could not decide: give the shadow another period.
            await asyncio.to_thread(self._cases.set_shadow_since, int(self._clock() * 1000))
        if report is not None:
            await asyncio.to_thread(self.apply, report)

    async def run_job(self, mode: Mode, challenger: str | None = None) -> CycleReport:
        """Run one cycle in a child process and return its report."""
        with tempfile.TemporaryDirectory(prefix="riskstream-cycle-") as scratch:
            result = Path(scratch) / "report.json"
            args = ["-m", "stream.trainer.job", "--mode", mode, "--result", str(result)]
            if challenger is not None:
                args += ["--challenger", challenger]
            # The child reads the same settings from its environment (secrets included: they
            # go to the child's environment only, never to a log).
            env = {**os.environ, **to_env(self._settings), "HF_HUB_OFFLINE": "1"}
            self._child = await asyncio.create_subprocess_exec(sys.executable, *args, env=env)
            try:
                code = await self._child.wait()
            except asyncio.CancelledError:
                await self._terminate_child()
                raise
            finally:
                child, self._child = self._child, None
            if code != 0:
                raise FineTuneFailed(f"job process {child.pid} exited with {code}")
            try:
                return CycleReport.model_validate_json(result.read_bytes())
            except (OSError, ValidationError) as exc:
                raise FineTuneFailed(f"no usable report from the job process: {exc}") from exc

    async def _terminate_child(self) -> None:
        child = self._child
        if child is None or child.returncode is not None:
            return
        log.info("stopping the job process %d", child.pid)
        child.terminate()
        try:
            await asyncio.wait_for(child.wait(), _TERMINATE_GRACE_S)
        except TimeoutError:
            child.kill()
            await child.wait()

    def apply(self, report: CycleReport) -> str:
        """Act on a cycle's report: move pointers, tell scorers, record and log. Returns the
        result (promoted, shadowed, rejected, retired, skipped)."""
        details = {"cycle": report.model_dump(mode="json")}
        if not report.decided:
            result = "skipped"
        elif report.mode == "finetune" and report.promote:
            assert report.challenger is not None
            if self._ts.shadow_mode:
                self._registry.set_shadow(report.challenger, report.reason, details)
                self._cases.set_shadow_since(int(self._clock() * 1000))
                self._announce(report.challenger, "shadow", report.reason)
                result = "shadowed"
            else:
                self._registry.promote(report.challenger, report.reason, details)
                self._announce(report.challenger, "promote", report.reason)
                result = "promoted"
        elif report.mode == "finetune":
            self._registry.record("reject", report.champion or "", report.reason, details)
            result = "rejected"
        elif report.promote:
            assert report.challenger is not None
            self._registry.promote(report.challenger, f"after shadow: {report.reason}", details)
            self._cases.set_shadow_since(0)
            self._announce(report.challenger, "promote", report.reason)
            result = "promoted"
        else:
            self._registry.set_shadow(None, f"rejected after shadow: {report.reason}", details)
            self._cases.set_shadow_since(0)
            self._announce(report.champion or "", "unshadow", report.reason)
            result = "retired"
        self._metrics.record_cycle(report, result)
        self._metrics.set_pointers(self._registry.champion(), self._registry.shadow())
        log.info(
            "%s cycle %s: %s | champion %s %s | challenger %s %s",
            report.mode,
            result,
            report.reason or report.skip_reason,
            report.champion,
            _brief(report.champion_metrics),
            report.challenger or "(not registered)",
            _brief(report.challenger_metrics),
            extra={"cycle_result": result, "cycle": report.model_dump(mode="json")},
        )
        return result

    def _announce(self, version: str, action: NoticeAction, reason: str) -> None:
        try:
            announce_champion(self._settings, version, action, reason)
        except KafkaException as exc:
            # The registry pointer is the truth; scorers re-read it every few seconds.
            log.warning("could not announce %s of %s (scorers will poll): %s", action, version, exc)

    # --- drift ------------------------------------------------------------------------------------

    def measure_drift(self) -> drift.DriftReport | None:
        """PSI of recent traffic against the champion's reference (its ``reference_stats.json``,
        or, when it has none, the stored labelled cases - see docs/feedback-loop.md)."""
        champion = self._registry.champion()
        if champion is None:
            return None
        try:
            reference = self._registry.reference_stats(champion)
        except ModelError as exc:
            log.warning("ignoring the reference statistics of %s: %s", champion, exc)
            reference = None
        if reference is None:
            reference = self._reference_from_cases(champion)
            if reference is None:
                return None
        sample = self._sampler.sample(self._ts.drift_sample_size, seed=int(self._clock()))
        if not sample:
            return None
        newest = max(r.event_time_ms for r in sample)
        window_ms = self._ts.drift_window_hours * 3_600_000
        recent = [r for r in sample if r.event_time_ms >= newest - window_ms]
        own_scores = [r.score for r in recent if r.model_version == champion]
        report = drift.drift_report(
            reference,
            np.asarray([r.features for r in recent], dtype=np.float64),
            FEATURE_NAMES,
            [r.clause_ids for r in recent],
            [r.narrative for r in recent],
            np.asarray(own_scores) if own_scores else None,
        )
        self._metrics.record_drift(report)
        log.info(
            "drift of %d recent events vs %s: features max PSI %.3f (%s), clauses %.3f, "
            "tokens %.3f, scores %.3f",
            report.rows, champion, report.max_feature_psi,
            ", ".join(f"{n} {v:.2f}" for n, v in report.top_features(3)),
            report.clause_psi, report.token_psi, report.score_psi,
        )  # fmt: skip
        return report

    def _reference_from_cases(self, champion: str) -> dict[str, Any] | None:
        cases = [case for _, case in self._cases.load_cases()]
        if not cases:
            return None
        own = [c.score for c in cases if c.model_version == champion]
        return drift.reference_stats(
            np.asarray([c.features for c in cases], dtype=np.float64),
            FEATURE_NAMES,
            [c.clause_ids for c in cases],
            [c.narrative for c in cases],
            np.asarray(own) if own else None,
            model_version=champion,
        )


def _brief(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    keys = ("average_precision", "roc_auc", "precision_at_threshold", "recall_at_threshold")
    return "(" + ", ".join(f"{k} {metrics[k]}" for k in keys if k in metrics) + ")"
