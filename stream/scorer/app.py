"""Assembling a scorer from settings: Redis client, context store, model, runner, metrics.

Kept apart from the loop so tests, replays and benchmarks build the same object the
`riskstream run scorer` command runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from models.errors import ModelError
from models.inference import LoadedModel, load_model
from models.registry import Registry
from schemas import TransactionEvent
from schemas.features import FEATURE_NAMES
from schemas.narrative import Narrative, NarrativeSpec, build_narrative, default_spec
from stream.context.store import ContextStore, EventContext
from stream.kafka.groups import GroupOffsetsUnavailable
from stream.pipeline.health import Health, MetricsServer
from stream.pipeline.records import ScoredRecordStore
from stream.pipeline.startup import mark_if_new, wait_for_context_store
from stream.redis_client import connect
from stream.scorer.core import AlertMode, Narrate
from stream.scorer.errors import ScorerFatal
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.model_source import ChampionWatcher, ModelLoader
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

    def narrate(event: TransactionEvent, context: EventContext) -> Narrative:
        # the context's story too: models are trained on narratives that tell it
        return build_narrative(event, context.features, spec, context.story)

    return narrate


def loader_for(settings: Settings) -> ModelLoader:
    def load(version: str) -> LoadedModel:
        model = load_model(settings.model, version, batch_size=settings.scorer.batch_max_size)
        narrator_for(model)  # refuse incompatible models before they are swapped in
        return model

    return load


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


# What a model can raise when it cannot be loaded: the registry's own errors, a file system
# error, or torch/safetensors refusing the weights.
_LOAD_ERRORS = (ModelError, OSError, ValueError, RuntimeError)


def model_start_problem(settings: Settings, version: str | None, exc: BaseException) -> str:
    """One line saying which model cannot be loaded, why, and what fixes it."""
    registry = settings.model.registry_dir
    reason = " ".join(str(exc).split())  # one line, whatever the underlying error printed
    if version is None:
        return (
            f"no champion model in {registry}: train and promote one "
            "(`riskstream model train --data DIR --promote`), or set "
            "RISKSTREAM_MODEL__REGISTRY_DIR to a registry that has one"
        )
    return (
        f"model {version} in {registry} cannot be loaded ({reason}); fix: promote a working "
        "version (`riskstream model list`, `riskstream model promote VERSION`) or roll back "
        "(`riskstream model rollback`)"
    )


def _watch_champion(settings: Settings, pinned_version: str | None) -> ChampionWatcher:
    """The champion (or the pinned version) loaded, or :class:`ScorerFatal` with one line."""
    try:
        return ChampionWatcher(
            settings,
            loader_for(settings),
            pinned_version=pinned_version,
            # The registry's shadow pointer (set by the trainer's shadow mode) is followed
            # unless a shadow is pinned by settings or the scorer runs one fixed version.
            follow_shadow=settings.scorer.shadow_model is None and pinned_version is None,
        )
    except _LOAD_ERRORS as exc:
        try:
            version = pinned_version or Registry(settings.model.registry_dir).champion()
        except OSError:
            version = None
        raise ScorerFatal(model_start_problem(settings, version, exc)) from exc


def build_scorer(
    settings: Settings,
    *,
    pinned_version: str | None = None,
    alert_mode: AlertMode = "live",
    serve_metrics: bool = True,
    accept_context_loss: bool = False,
) -> ScorerApp:
    """Everything the scorer runs, or :class:`ScorerFatal` (nothing left open) when it cannot
    start: the model first, so a missing or broken champion ends start-up in seconds."""
    watcher = _watch_champion(settings, pinned_version)
    try:
        return _assemble(settings, watcher, alert_mode, serve_metrics, accept_context_loss)
    except BaseException:
        watcher.stop()  # its Kafka consumer's threads would keep the process alive
        raise


def _assemble(
    settings: Settings,
    watcher: ChampionWatcher,
    alert_mode: AlertMode,
    serve_metrics: bool,
    accept_context_loss: bool,
) -> ScorerApp:
    shadow = None
    if settings.scorer.shadow_model is not None:
        try:
            shadow = loader_for(settings)(settings.scorer.shadow_model)
        except _LOAD_ERRORS as exc:
            raise ScorerFatal(
                "shadow " + model_start_problem(settings, settings.scorer.shadow_model, exc)
            ) from exc
        log.info("shadow model %s scores alongside; its alerts go to %s", shadow.version,
                 settings.topics.alerts_shadow)  # fmt: skip
    store = wait_for_context_store(settings)
    claim_namespace(store, settings, accept_loss=accept_context_loss)
    records = ScoredRecordStore(
        connect(settings.redis),
        settings.context.namespace,
        settings.scorer.scored_ttl_days * 86_400,
    )
    metrics = ScorerMetrics()
    health = Health(stall_after_s=max(60.0, settings.scorer.shutdown_timeout_s))
    server = None
    if serve_metrics:
        # Bound before the Kafka clients exist: a taken port is a start-up failure to report,
        # not a traceback with a consumer left running.
        try:
            server = MetricsServer(
                settings.scorer.metrics_host, settings.scorer.metrics_port, metrics.registry,
                health,
            )  # fmt: skip
        except OSError as exc:
            raise ScorerFatal(
                f"metrics server on {settings.scorer.metrics_host}:"
                f"{settings.scorer.metrics_port}: {exc}"
            ) from exc
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
    if server is not None:
        server.start()
    watcher.start()
    return ScorerApp(runner, watcher, server)
