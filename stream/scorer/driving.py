"""The live scorer on the batch driver (``stream.pipeline.driver``): its steps and its hooks.

* ``ScorerSteps``: a batch through the ``BatchProcessor`` with the current champion -
  decode, claims and context (handing the driver the moment Redis works, to deliver the
  batch in the model lane meanwhile), narratives; the model calls on the lane; the outputs
  of the partitions still owned; the batch's metrics once it is delivered and committed.
* ``ScorerHooks``: what the scorer does around the driver's steps - the champion swapped in
  between batches, liveness and readiness for /health and /ready, the Kafka clients'
  failures that no waiting fixes, and the metrics of each stage, retry and commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from stream.pipeline.driver import Hooks, Keep
from stream.pipeline.health import Health
from stream.pipeline.messages import Incoming
from stream.scorer.core import BegunBatch, ModelScores, PreparedBatch
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.model_source import ChampionWatcher
from stream.scorer.processor import BatchOutputs, BatchProcessor


class ScorerSteps:
    """``Steps[Incoming, PreparedBatch, ModelScores, BatchOutputs]`` of the live scorer."""

    def __init__(
        self,
        processor: BatchProcessor,
        watcher: ChampionWatcher,
        metrics: ScorerMetrics,
        health: Health,
    ) -> None:
        self._processor, self._watcher = processor, watcher
        self._metrics, self._health = metrics, health

    def prepare(self, batch: list[Incoming], meanwhile: Callable[[], None]) -> PreparedBatch:
        """Step 1 with the champion of the moment (swapped only between batches); while
        Redis applies this batch's context, the batch in the lane is delivered if the model
        is done with it (a fast model's lane is idle anyway)."""
        begun = self._processor.begin(batch, self._watcher.current)
        meanwhile()
        return self._processor.complete(begun)

    def begin(self, batch: list[Incoming]) -> BegunBatch:
        """The first half of ``prepare`` (``SplitPrepare``, the driver's prefetch): decode,
        claims, and the context handed to Redis, with the champion of the moment."""
        return self._processor.begin(batch, self._watcher.current)

    def complete(self, begun: BegunBatch) -> PreparedBatch:
        """The second half: wait for the context, narrate."""
        return self._processor.complete(begun)

    def score(self, prepared: PreparedBatch) -> ModelScores:
        return self._processor.score(prepared)

    def finish(self, prepared: PreparedBatch, scores: ModelScores, keep: Keep) -> BatchOutputs:
        return self._processor.finish(prepared, scores, keep=lambda m: keep((m.topic, m.partition)))

    def done(self, batch: list[Incoming], prepared: PreparedBatch, outputs: BatchOutputs) -> None:
        """Delivered and committed: the batch is no longer being retried."""
        self._health.set_ready("retrying")
        metrics = self._metrics
        metrics.batch_size.observe(len(batch))
        metrics.events_scored.labels(prepared.model.version).inc(outputs.scored)
        now_ms = time.time() * 1000
        for alert, ts_ms in zip(outputs.alerts, outputs.incoming_ts_ms, strict=True):
            metrics.alerts.labels(alert.typology.value, alert.mode).inc()
            if ts_ms is not None:
                metrics.event_to_alert.observe(max(now_ms - ts_ms, 0.0) / 1000)


class ScorerHooks(Hooks[Incoming]):
    """The scorer's side of the driver's hooks; ``check_clients`` raises ``ScorerFatal``
    when a Kafka client failed in a way waiting cannot fix."""

    def __init__(
        self,
        processor: BatchProcessor,
        watcher: ChampionWatcher,
        metrics: ScorerMetrics,
        health: Health,
        check_clients: Callable[[], None],
    ) -> None:
        self._processor, self._watcher = processor, watcher
        self._metrics, self._health = metrics, health
        self._check_clients = check_clients

    def before_read(self) -> None:
        self._health.beat()
        swapped = self._watcher.swap_if_ready()
        if swapped is not None:
            self._metrics.set_model(swapped.version)
            self._metrics.model_swaps.inc()
        shadow = self._watcher.swap_shadow_if_ready()
        if shadow is not None:
            self._processor.shadow = shadow[0]

    def after_read(self, records: list[Incoming]) -> None:
        self._metrics.events_in.inc(len(records))
        self._check_clients()

    def waiting(self) -> None:
        self._health.beat()
        self._check_clients()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        # "poll": what the metric has called a read since before the driver.
        with self._metrics.stage("poll" if name == "read" else name):
            yield
        if name == "produce":  # acknowledged: no longer waiting for the broker
            self._health.set_ready("flush")

    def committed(self) -> None:
        self._metrics.commits.inc()

    def retrying(self, stage: str, error: Exception, attempt: int) -> None:
        """The driver's ``on_retry``: a batch retried is not ready; a wait for the broker's
        acknowledgements neither, but it is no retry (the messages are not produced again)."""
        if stage == "flush":
            self._health.set_not_ready("flush", str(error))
            return
        self._metrics.retries.labels(type(error).__name__).inc()
        if stage != "commit":
            self._health.set_not_ready("retrying", f"{type(error).__name__}: {error}")
