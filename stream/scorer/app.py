"""Assembling a scorer from settings: Redis client, context store, model, runner, metrics.

Kept apart from the loop so tests, replays and benchmarks build the same object the
`riskstream run scorer` command runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson
import redis

from models.errors import ModelError
from models.inference import LoadedModel, load_model
from schemas import TransactionEvent
from stream.context.errors import ContextUnavailable
from stream.context.features import FEATURE_NAMES, ContextFeatures
from stream.context.store import ContextStore
from stream.narrative import Narrative, NarrativeSpec, build_narrative, default_spec
from stream.redis_client import connect
from stream.scorer.core import AlertMode, Narrate
from stream.scorer.errors import ScorerFatal
from stream.scorer.metrics import Health, MetricsServer, ScorerMetrics
from stream.scorer.model_source import ChampionWatcher, ModelLoader
from stream.scorer.records import ScoredRecordStore
from stream.scorer.runner import ScorerRunner
from stream.settings import Settings

log = logging.getLogger(__name__)


def narrator_for(model: LoadedModel) -> Narrate:
    """Narratives exactly as the model was trained to read them: its own spec (template
    version + fitted edges), and - for hybrid models - features this scorer computes (a model
    of an older features version reads a subset of them, by name; see ``model_features``)."""
    spec = (
        NarrativeSpec.from_json(orjson.dumps(model.narrative_spec))
        if model.narrative_spec
        else default_spec()
    )
    unknown = set(model.feature_names) - set(FEATURE_NAMES)
    if model.hybrid and unknown:
        raise ModelError(
            f"model {model.version} reads features this scorer does not compute "
            f"({', '.join(sorted(unknown))}); retrain it on the current context features"
        )

    def narrate(event: TransactionEvent, features: ContextFeatures) -> Narrative:
        return build_narrative(event, features, spec)

    return narrate


def loader_for(settings: Settings) -> ModelLoader:
    def load(version: str) -> LoadedModel:
        model = load_model(settings.model, version, batch_size=settings.scorer.batch_max_size)
        narrator_for(model)  # refuse incompatible models before they are swapped in
        return model

    return load


def wait_for_context_store(settings: Settings, deadline_s: float = 120.0) -> ContextStore:
    """Open the context store, waiting for Redis to come up (containers start in any order).

    Raises ScorerFatal at once if Redis refuses the password: that is configuration, not a
    server still starting."""
    client = connect(settings.redis)
    started = time.monotonic()
    while True:
        try:
            return ContextStore(client, settings.context)
        except ContextUnavailable as exc:
            if isinstance(exc.__cause__, redis.AuthenticationError):
                # Redis answered and said no: waiting will not change its mind.
                raise ScorerFatal(
                    f"Redis refused the credentials for {settings.redis.safe_url()}: "
                    f"{exc.__cause__}"
                ) from exc
            if time.monotonic() - started > deadline_s:
                raise
            log.warning("waiting for Redis at %s: %s", settings.redis.safe_url(), exc)
            time.sleep(2.0)


@dataclass
class ScorerApp:
    runner: ScorerRunner
    watcher: ChampionWatcher
    metrics_server: MetricsServer | None

    def close(self) -> None:
        self.watcher.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()


def build_scorer(
    settings: Settings,
    *,
    pinned_version: str | None = None,
    alert_mode: AlertMode = "live",
    serve_metrics: bool = True,
    accept_context_loss: bool = False,
) -> ScorerApp:
    store = wait_for_context_store(settings)
    if accept_context_loss:
        store.initialize_namespace()
    records = ScoredRecordStore(
        connect(settings.redis),
        settings.context.namespace,
        settings.scorer.scored_ttl_days * 86_400,
    )
    watcher = ChampionWatcher(
        settings,
        loader_for(settings),
        pinned_version=pinned_version,
        # The registry's shadow pointer (set by the trainer's shadow mode) is followed unless
        # a shadow is pinned by settings or the scorer runs one fixed version.
        follow_shadow=settings.scorer.shadow_model is None and pinned_version is None,
    )
    shadow = None
    if settings.scorer.shadow_model is not None:
        shadow = loader_for(settings)(settings.scorer.shadow_model)
        log.info("shadow model %s scores alongside; its alerts go to %s", shadow.version,
                 settings.topics.alerts_shadow)  # fmt: skip
    metrics = ScorerMetrics()
    health = Health(stall_after_s=max(60.0, settings.scorer.shutdown_timeout_s))
    runner = ScorerRunner(
        settings,
        watcher=watcher,
        store=store,
        records=records,
        narrator=narrator_for,
        metrics=metrics,
        health=health,
        shadow=shadow,
        alert_mode=alert_mode,
    )
    server = None
    if serve_metrics:
        server = MetricsServer(
            settings.scorer.metrics_host, settings.scorer.metrics_port, metrics.registry, health
        ).start()
    watcher.start()
    return ScorerApp(runner, watcher, server)
