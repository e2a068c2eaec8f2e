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
from stream.context.errors import ContextLayoutMismatch, ContextUnavailable
from stream.context.features import FEATURE_NAMES, ContextFeatures
from stream.context.store import ContextStore
from stream.kafka.groups import GroupOffsetsUnavailable, committed_offsets
from stream.narrative import Narrative, NarrativeSpec, build_narrative, default_spec
from stream.redis_client import connect
from stream.scorer.core import AlertMode, Narrate
from stream.scorer.errors import ScorerFatal
from stream.scorer.metrics import Health, MetricsServer, ScorerMetrics
from stream.scorer.model_source import ChampionWatcher, ModelLoader
from stream.scorer.records import ScoredRecordStore
from stream.scorer.runner import ScorerRunner
from stream.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


def narrator_for(model: LoadedModel) -> Narrate:
    """Narratives exactly as the model was trained to read them: its own spec (template
    version + fitted edges), and - for hybrid models - the same feature vector layout."""
    if model.hybrid and tuple(model.feature_names) != FEATURE_NAMES:
        raise ModelError(
            f"model {model.version} was trained on a different feature layout than this "
            "scorer computes; retrain it on the current context features"
        )
    spec = (
        NarrativeSpec.from_json(orjson.dumps(model.narrative_spec))
        if model.narrative_spec
        else default_spec()
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
    The namespace is not marked in use here (see :func:`claim_namespace`).

    Raises ScorerFatal at once if Redis refuses the password, or the namespace was written
    with another hash key: that is configuration, not a server still starting."""
    client = connect(settings.redis)
    started = time.monotonic()
    while True:
        try:
            return ContextStore(client, settings.context)
        except ContextLayoutMismatch as exc:
            raise ScorerFatal(str(exc)) from exc
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


def mark_if_new(store: ContextStore, kafka: KafkaSettings, group: str, topic: str) -> bool:
    """Mark the context namespace in use if it is new; returns whether it is marked now.

    An unmarked namespace is either new or lost (Redis came back empty). Kafka tells them
    apart: a consumer group that never committed on its input topic has processed nothing, so
    there is nothing to lose and the namespace is marked. A group that has committed expects
    its context in Redis: then nothing is marked (False), and only an operator's
    :meth:`ContextStore.initialize_namespace` (``--accept-context-loss``) may mark it
    (docs/scorer.md, "Redis loss"). Raises GroupOffsetsUnavailable when Kafka cannot say."""
    if store.namespace_in_use():
        return True
    if committed_offsets(kafka, group, topic):
        return False
    store.initialize_namespace(only_if_missing=True)
    log.info("new context namespace %r (group %r has not committed on %r yet)",
             store.namespace, group, topic)  # fmt: skip
    return True


def claim_namespace(store: ContextStore, settings: Settings, *, accept_loss: bool) -> None:
    """The scorer's start: the namespace marked in use, or ScorerFatal (see mark_if_new)."""
    key = settings.context.hash_key
    if key is None or key.get_secret_value().startswith("CHANGE-ME"):
        log.warning(
            "context.hash_key is not set (or still the example's placeholder): counterparty, "
            "device and event-id hashes use a public key, so ids can be chosen to collide; "
            "set RISKSTREAM_CONTEXT__HASH_KEY to a random secret in production"
        )
    if accept_loss:
        store.initialize_namespace()
        log.warning("context namespace %r marked in use by --accept-context-loss: context "
                    "continues from what Redis holds", store.namespace)  # fmt: skip
        return
    group, topic = settings.scorer.group_id, settings.topics.transactions
    try:
        marked = mark_if_new(store, settings.kafka, group, topic)
    except GroupOffsetsUnavailable as exc:
        raise ScorerFatal(f"{exc} (asked to tell a new context namespace from a lost one)") from exc
    if not marked:
        raise ScorerFatal(
            f"context namespace {store.namespace!r} is not marked in use in Redis, but consumer "
            f"group {group!r} has committed offsets on {topic!r}: Redis lost the context of "
            "what was processed (restart without persistence, flush, eviction). Restore Redis, "
            "or start with --accept-context-loss to continue from an empty context."
        )


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
    claim_namespace(store, settings, accept_loss=accept_context_loss)
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
