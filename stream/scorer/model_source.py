"""Which model scores: the registry's champion, swapped in without stopping.

A background thread watches for a new champion - promptly when a notice arrives on the
`risk.models` topic, and by re-reading the registry's champion pointer every few seconds in
case a notice is missed - and loads it off the scoring thread. The scoring loop calls
`swap_if_ready()` between batches, so a batch is scored by exactly one model and every alert
names the version that scored it. A model that fails to load is logged and skipped: the
current one keeps scoring. With ``follow_shadow`` the registry's shadow pointer is followed the
same way (`swap_shadow_if_ready()`): a challenger the trainer put in shadow scores beside the
champion, its alerts going to the shadow topic only.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException

from models.inference import LoadedModel
from models.registry import Registry
from schemas.errors import RiskstreamError
from stream.kafka.clients import consumer_config
from stream.kafka.model_notices import read_notice
from stream.settings import Settings

log = logging.getLogger(__name__)

ModelLoader = Callable[[str], LoadedModel]


class ChampionWatcher:
    """Holds the scoring model; loads a newly promoted champion in the background."""

    def __init__(
        self,
        settings: Settings,
        loader: ModelLoader,
        *,
        pinned_version: str | None = None,
        check_interval_s: float = 5.0,
        listen_for_notices: bool = True,
        follow_shadow: bool = False,
    ) -> None:
        self._registry = Registry(settings.model.registry_dir)
        self._loader = loader
        self._pinned = pinned_version
        self._interval_s = check_interval_s
        self._lock = threading.Lock()
        self._pending: LoadedModel | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._failed_versions: set[str] = set()
        self._follow_shadow = follow_shadow
        self._shadow_target: str | None = None
        """The shadow version the scoring loop has, or will have after the next swap."""
        self._pending_shadow: tuple[LoadedModel | None] | None = None
        self._thread: threading.Thread | None = None
        self._notices: Consumer | None = None
        # The model first: a champion that cannot load ends start-up before any Kafka client
        # (and its threads) exists, so the process can exit at once.
        self.current = loader(self._registry.resolve(pinned_version))
        if listen_for_notices and pinned_version is None:
            # A group of its own per process: every scorer must see every notice.
            config = consumer_config(
                settings.kafka,
                f"{settings.scorer.group_id}-models-{uuid.uuid4().hex[:8]}",
                auto_offset_reset="latest",
            )
            self._notices = Consumer(config)
            self._notices.subscribe([settings.topics.models])

    def start(self) -> ChampionWatcher:
        if self._pinned is None:
            self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._notices is not None:
            self._notices.close()

    def swap_if_ready(self) -> LoadedModel | None:
        """Between batches: switch to a freshly loaded champion, if one is waiting."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        previous, self.current = self.current.version, pending
        log.info("now scoring with model %s (was %s)", pending.version, previous)
        return pending

    def swap_shadow_if_ready(self) -> tuple[LoadedModel | None] | None:
        """Between batches: ``(model,)`` when the shadow changed (``(None,)``: no shadow any
        more), None when it did not."""
        with self._lock:
            pending, self._pending_shadow = self._pending_shadow, None
        if pending is not None:
            name = pending[0].version if pending[0] else "none"
            log.info("shadow model is now %s", name)
        return pending

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._notices is not None:
                self._drain_notices()
            self._maybe_load()
            self._maybe_load_shadow()
            self._wake.wait(self._interval_s if self._notices is None else 0.0)
            self._wake.clear()

    def _drain_notices(self) -> None:
        assert self._notices is not None
        try:
            message = self._notices.poll(self._interval_s)
        except KafkaException as exc:  # broker away: the periodic pointer check still works
            log.warning("model notices unavailable: %s", exc)
            self._stop.wait(self._interval_s)
            return
        if message is not None and message.error() is None:
            notice = read_notice(message.value())
            if notice is not None:
                log.info("model notice received: %s %s (%s)",
                         notice.action, notice.version, notice.reason)  # fmt: skip

    def _maybe_load(self) -> None:
        try:
            champion = self._registry.champion()
        except OSError as exc:
            log.warning("cannot read the champion pointer: %s", exc)
            return
        with self._lock:
            waiting = self._pending.version if self._pending else None
        if champion is None or champion in (self.current.version, waiting):
            return
        if champion in self._failed_versions:
            return
        log.info("loading new champion %s in the background", champion)
        try:
            loaded = self._loader(champion)
        except (RiskstreamError, OSError, ValueError, RuntimeError) as exc:
            # A broken model must never replace a working one; keep scoring, say why.
            self._failed_versions.add(champion)
            log.error(
                "champion %s failed to load, keeping %s: %s", champion, self.current.version, exc
            )
            return
        with self._lock:
            self._pending = loaded

    def _maybe_load_shadow(self) -> None:
        if not self._follow_shadow:
            return
        try:
            wanted = self._registry.shadow()
        except OSError as exc:
            log.warning("cannot read the shadow pointer: %s", exc)
            return
        if wanted == self._shadow_target or wanted in self._failed_versions:
            return
        loaded = None
        if wanted is not None:
            log.info("loading shadow model %s in the background", wanted)
            try:
                loaded = self._loader(wanted)
            except (RiskstreamError, OSError, ValueError, RuntimeError) as exc:
                self._failed_versions.add(wanted)
                log.error("shadow model %s failed to load, not scoring in shadow: %s", wanted, exc)
                return
        with self._lock:
            self._pending_shadow = (loaded,)
            self._shadow_target = wanted
