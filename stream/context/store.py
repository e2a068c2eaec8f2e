"""`ContextStore`: rolling customer and counterparty context in Redis, one micro-batch at a time.

A batch costs one Redis round trip: a pipeline holding a ``PEXPIRE`` of the namespace marker
and ``EVALSHA`` calls of the customer and counterparty scripts. On a standalone Redis that is
one call per script for the whole batch (chunked at ``ContextLimits.ops_per_call`` ops so one
call never blocks Redis for long); on Redis Cluster one call per hash slot and script. Every
read-modify-write happens inside Lua, so workers never race, and each entity's update is
idempotent per event id, so a retried batch changes nothing and returns the same snapshots.

See docs/context.md for the state layout, windows, out-of-order rule and measured sizes.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, ParamSpec, TypeVar

import redis
import redis.cluster
import redis.exceptions as rexc
from redis.crc import key_slot

from schemas.label import LabelEvent
from schemas.transaction import TransactionEvent
from stream.context import keys
from stream.context.errors import (
    ContextError,
    ContextLayoutMismatch,
    ContextStateLost,
    ContextUnavailable,
)
from stream.context.features import (
    COUNTERPARTY_RECORD,
    CUSTOMER_RECORD,
    ContextFeatures,
    assemble,
)
from stream.context.ops import CONFIG, EventOps, counterparty_entity, event_ops, label_op
from stream.context.story import ENTRY, StoryEntry, decode_story, story_features
from stream.redis_client import AnyRedis
from stream.settings import DEFAULT_LABEL_MATURITY_DAYS, ContextSettings

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

_DAY_MS: Final = 86_400_000
_CUSTOMER_VALUES: Final = struct.Struct("<" + "f" * len(CUSTOMER_RECORD))
_COUNTERPARTY_RECORD: Final = struct.Struct("<B" + "f" * len(COUNTERPARTY_RECORD))
_LABELS_CONFIG: Final = struct.Struct("<dddddd")
_EXPOSURE_CONFIG: Final = struct.Struct("<dd")
_DOUBLE: Final = struct.Struct("<d")

# Errors after which the same batch may succeed: the server is (re)starting, failing over or
# unreachable. BusyLoadingError is a ConnectionError subclass; ReadOnlyError means a replica
# answered during a failover.
_RETRIABLE: Final = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.TryAgainError,
    rexc.ClusterDownError,
    rexc.MasterDownError,
    rexc.ReadOnlyError,
)
# The scripts' error reply for a state blob of another layout version (see common.lua); a
# pipeline prefixes the command to the message, so it is searched for, not matched at the start.
_LAYOUT_MISMATCH: Final = "riskstream context layout "


@dataclass(frozen=True, slots=True)
class ContextLimits:
    """Per-entity bounds and lifetimes. Changing one changes what a replay computes: keep them
    fixed within a namespace. Sizes they imply are measured in docs/context.md."""

    profile_ttl_days: int = 400
    """The state blob (profile: first/last seen, lifetime counts, amount baseline) outlives the
    35-day windows, so a customer silent for months is still recognised as dormant."""
    log_cap: int = 256
    """Customer recent-event log entries (1h and 24h windows are exact up to this many)."""
    seen_cap: int = 512
    """First-seen counterparties per customer; beyond it some are forgotten (become "new")."""
    device_cap: int = 64
    """First-seen devices per customer."""
    set_cap: int = 2048
    """Distinct inbound senders (customer) or customers (counterparty) tracked in 7 days."""
    dedupe_cap: int = 256
    """Event ids (with their feature snapshots) remembered per entity, at most... Keep it at
    least the events of one entity that can be redelivered together (a batch, by default)."""
    dedupe_span_s: int = 6 * 3600
    """...and while the entity's newest event time is less than this past their arrival.
    Redelivery after a crash or rebalance repeats the uncommitted tail of a partition: the
    entity's latest events, within hours of event time unless traffic is very sparse."""
    labels_cap: int = 1024
    """Fraud labels kept per counterparty (the oldest-known go first)."""
    exposure_fanout_cap: int = 512
    """Customers marked per fraud label at a compromised point (its customers of the days
    around the fraud; the earliest payments first). Bounds the work one label can cause."""
    exposure_marks_cap: int = 32
    """Payments at compromised points remembered per customer."""
    ops_per_call: int = 512
    """Ops per EVALSHA: bounds how long one script call blocks Redis (~10 ms)."""


@dataclass(frozen=True, slots=True)
class EventContext:
    """The context of one event, as of its own time and including it."""

    event_id: str
    features: ContextFeatures
    duplicate: bool
    """The event had been processed before; ``features`` is the snapshot stored back then."""
    story: tuple[StoryEntry, ...] = ()
    """The customer's remembered events before this one, newest first (``story_events``)."""


@dataclass(frozen=True, slots=True)
class LabelApplyResult:
    applied: int
    """Fraud labels newly recorded against their counterparty entity."""
    duplicates: int
    """Fraud labels of events already labelled fraud (idempotent replays, or a second source)."""
    skipped: int
    """Labels that say "legitimate", or name neither a counterparty nor a terminal."""
    exposed: int = 0
    """Payments newly marked as made at a point these labels confirm as compromised."""


class PendingContexts:
    """The contexts of a submitted batch, once Redis has applied it."""

    def __init__(
        self,
        future: Future[list[Any]] | None,
        events: Sequence[TransactionEvent],
        prepared: list[EventOps],
        calls: list[_Call],
        story_bytes: int = 0,
    ) -> None:
        self._future = future
        self._events = events
        self._prepared = prepared
        self._calls = calls
        self._story_bytes = story_bytes

    def result(self, timeout: float | None = None) -> list[EventContext]:
        """The contexts, in the batch's order; raises what ``update_batch`` raises."""
        if self._future is None:
            return []
        outputs = self._future.result(timeout)
        n = len(self._events)
        customer: list[bytes] = [b""] * n
        counterparty: list[tuple[float, ...]] = [()] * n
        duplicate = [False] * n
        for call, output in zip(self._calls, outputs, strict=True):
            _unpack(call, output, customer, counterparty, duplicate, self._story_bytes)
        contexts = []
        for i, (event, ops) in enumerate(zip(self._events, self._prepared, strict=True)):
            record = customer[i]
            story = decode_story(record[_CUSTOMER_VALUES.size :], ops.time_s, ops.counterparty_hash)
            features = assemble(
                ops.event_part,
                _CUSTOMER_VALUES.unpack_from(record),
                counterparty[i],
                story_features(story, ops.event_part[0]),
            )
            contexts.append(EventContext(event.event_id, features, duplicate[i], story))
        return contexts


def _unpack(
    call: _Call,
    output: object,
    customer: list[bytes],
    counterparty: list[tuple[float, ...]],
    duplicate: list[bool],
    story_bytes: int,
) -> None:
    """Spread one script call's reply (per op: a status byte, then the record) over the
    batch's slots."""
    if not isinstance(output, bytes):
        raise ContextError(f"unexpected reply from the {call.script} script")
    if call.script == "customer":
        width = 1 + _CUSTOMER_VALUES.size + story_bytes
        if len(output) != width * len(call.targets):
            raise ContextError(f"customer script returned {len(output)} bytes")
        for k, target in enumerate(call.targets):
            duplicate[target] = output[k * width] == 1
            customer[target] = output[k * width + 1 : (k + 1) * width]
        return
    if len(output) != _COUNTERPARTY_RECORD.size * len(call.targets):
        raise ContextError(f"{call.script} script returned {len(output)} bytes")
    for target, (_status, *values) in zip(
        call.targets, _COUNTERPARTY_RECORD.iter_unpack(output), strict=True
    ):
        counterparty[target] = tuple(values)


def _collect_marks(
    entity_key: str, label: bytes, exposed: list[bytes], marks: dict[tuple[str, bytes], float]
) -> None:
    """Add what labels.lua returned for one label - customer, time of their latest payment at
    the entity, ... - to ``marks``: (customer, packed payment time + entity tag) -> the
    earliest confirmation (label time) seen for it."""
    confirmed = _DOUBLE.unpack_from(label)[0]
    tag = entity_key[entity_key.index("{") + 1 : -1].encode()
    for i in range(0, len(exposed), 2):
        customer = exposed[i].decode()
        member = _DOUBLE.pack(float(exposed[i + 1])) + tag
        previous = marks.get((customer, member))
        if previous is None or confirmed < previous:
            marks[(customer, member)] = confirmed


def _script_source(name: str) -> str:
    return (resources.files("stream.context") / name).read_text(encoding="utf-8")


def _entity_script(name: str) -> str:
    # "#!lua" (no flags): Redis 7 rejects the whole call up front when over maxmemory, instead
    # of failing half-way through a batch.
    # The customer script adds the sliding-window helpers (window.lua) to the shared prelude.
    parts = ("common.lua", "window.lua") if name == "customer.lua" else ("common.lua",)
    return "#!lua\n" + "".join(_script_source(part) for part in (*parts, name, "main.lua"))


@dataclass(slots=True)
class _Call:
    script: str  # "customer", "counterparty" or "labels"
    keys: list[str]
    args: list[bytes]
    targets: list[int]  # per op: where its result goes


class ContextStore:
    """Rolling context in the namespace ``settings.namespace``.

    ``client`` must return bytes (``decode_responses=False``), as
    :func:`stream.redis_client.connect` does. Creating a store marks the namespace as in use;
    see :class:`ContextStateLost` for what the marker protects against.
    """

    def __init__(
        self,
        client: AnyRedis,
        settings: ContextSettings,
        limits: ContextLimits | None = None,
        *,
        label_maturity_days: int | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._limits = limits or ContextLimits()
        self._namespace = settings.namespace
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._marker = keys.marker_key(self._namespace)
        lim = self._limits
        self._profile_ttl_ms = lim.profile_ttl_days * _DAY_MS
        self._ttl_ms = settings.ttl_days * _DAY_MS
        # what customer.lua returns after each record: a count byte and the story's entries
        self._story_bytes = 1 + settings.story_events * ENTRY.size
        self._label_maturity_days = (
            label_maturity_days or settings.label_maturity_days or DEFAULT_LABEL_MATURITY_DAYS
        )
        self._config = self._event_config()
        self._labels_config = _LABELS_CONFIG.pack(
            float(self._ttl_ms),
            float(lim.labels_cap),
            float(settings.compromise_min_frauds),
            settings.compromise_min_share,
            settings.exposure_before_days * _DAY_MS,
            float(lim.exposure_fanout_cap),
        )
        # Marks live as long as they can count (the exposure window), at least as the windows.
        self._exposure_config = _EXPOSURE_CONFIG.pack(
            float(max(self._ttl_ms, (settings.exposure_window_days + 1) * _DAY_MS)),
            float(lim.exposure_marks_cap),
        )
        self._sources = {
            "customer": _entity_script("customer.lua"),
            "counterparty": _entity_script("counterparty.lua"),
            "labels": "#!lua\n" + _script_source("labels.lua"),
            "exposure": "#!lua\n" + _script_source("exposure.lua"),
        }
        self._shas: dict[str, str] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._guard(self._load_scripts)
        self._guard(self.initialize_namespace, only_if_missing=True)

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def limits(self) -> ContextLimits:
        return self._limits

    @property
    def label_maturity_days(self) -> int:
        return self._label_maturity_days

    def follow_model_maturity(self, model_days: int | None) -> None:
        """Compute counterparty risk with the maturity a model was trained with (its narrative
        spec's), unless the settings name one; cheap when nothing changes (called per batch)."""
        days = self._settings.label_maturity_days or model_days or DEFAULT_LABEL_MATURITY_DAYS
        if days != self._label_maturity_days:
            logger.info("counterparty risk now uses a label maturity of %d days", days)
            self.set_label_maturity_days(days)

    def set_label_maturity_days(self, days: int) -> None:
        """Serve another model's maturity (the one it was trained with) from the next batch
        on. The counterparty scripts recompute their cached mature windows on a change, so
        the state stays consistent whatever sequence of maturities it has seen."""
        if not 1 <= days <= 30:
            raise ContextError(f"label maturity must be 1..30 days, got {days}")
        self._label_maturity_days = days
        self._config = self._event_config()

    def _event_config(self) -> bytes:
        lim, settings = self._limits, self._settings
        return CONFIG.pack(
            float(self._ttl_ms),
            float(self._profile_ttl_ms),
            float(settings.out_of_order_tolerance_s * 1000),
            float(lim.log_cap),
            float(lim.seen_cap),
            float(lim.device_cap),
            float(lim.set_cap),
            float(lim.dedupe_cap),
            float(lim.dedupe_span_s * 1000),
            float(self._label_maturity_days),
            float(settings.exposure_window_days * _DAY_MS),
            float(settings.story_events),
        )

    # --- public API ---------------------------------------------------------------------------

    def initialize_namespace(self, only_if_missing: bool = False) -> None:
        """Mark the namespace as in use (again). Call after :class:`ContextStateLost` only to
        accept that the context starts from nothing."""
        self._client.set(self._marker, b"1", px=self._profile_ttl_ms, nx=only_if_missing)

    def update_batch(self, events: Sequence[TransactionEvent]) -> list[EventContext]:
        """Apply ``events`` in order and return each one's context, in the same order.

        Raises :class:`ContextUnavailable` (retry the whole batch later),
        :class:`ContextStateLost`, :class:`ContextLayoutMismatch` (state of another layout
        version; the script call that met it wrote nothing) or :class:`ContextError`.
        """
        return self.submit_batch(events).result()

    def submit_batch(self, events: Sequence[TransactionEvent]) -> PendingContexts:
        """Start applying ``events``; the contexts come from ``.result()``.

        Batches run one at a time, in submission order, on one background thread, so while
        Redis applies batch k+1 the caller can narrate and score batch k: Redis and Python then
        use both cores instead of taking turns. A batch's contexts never depend on whether
        later batches were submitted. (``update_batch`` is ``submit_batch(...).result()``.)
        """
        if not events:
            return PendingContexts(None, [], [], [])
        prepared = [event_ops(event) for event in events]
        calls = self._plan_events(events, prepared)
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="context-store")
            future = self._executor.submit(self._guard, self._run, calls)
        return PendingContexts(future, events, prepared, calls, self._story_bytes)

    def close(self) -> None:
        """Wait for submitted batches and stop the background thread (the client stays open)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> ContextStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply_labels(self, labels: Sequence[LabelEvent]) -> LabelApplyResult:
        """Record fraud labels against the labelled event's counterparty entity (its terminal
        when it names one, see ``ops.counterparty_entity``); from the label's time on, they
        count in that entity's label-derived risk. When the labels make an entity a confirmed
        compromised point, the customers who paid there around the fraud are marked (a second
        round trip, see labels.lua and exposure.lua). Idempotent."""
        ns = self._namespace
        ops: list[tuple[str, bytes, int]] = []
        skipped = 0
        for label in labels:
            if not label.is_suspicious or (
                label.counterparty_id is None and label.terminal_id is None
            ):
                skipped += 1
                continue
            kind, entity = counterparty_entity(label.terminal_id, label.counterparty_id or "")
            ops.append((keys.entity_base(ns, kind, entity), label_op(label), len(ops)))
        if not ops:
            return LabelApplyResult(0, 0, skipped)
        calls = list(self._group("labels", ops))
        outputs = self._guard(self._run, calls)
        applied = 0
        marks: dict[tuple[str, bytes], float] = {}
        for call, output in zip(calls, outputs, strict=True):
            if not isinstance(output, list) or len(output) != len(call.keys):
                raise ContextError("unexpected reply from the labels script")
            for key, op, reply in zip(call.keys, call.args, output, strict=True):
                added, exposed = reply
                applied += int(added)
                if exposed:
                    _collect_marks(key, op, exposed, marks)
        exposed_count = self._mark_exposures(marks) if marks else 0
        return LabelApplyResult(applied, len(ops) - applied, skipped, exposed_count)

    def _mark_exposures(self, marks: dict[tuple[str, bytes], float]) -> int:
        """One exposure.lua op per (customer, payment at a point): its earliest confirmation."""
        ns = self._namespace
        ops = [
            (keys.customer_base(ns, customer), _DOUBLE.pack(confirmed) + member, i)
            for i, ((customer, member), confirmed) in enumerate(sorted(marks.items()))
        ]
        outputs = self._guard(self._run, list(self._group("exposure", ops)))
        return sum(int(n) for n in outputs)

    def drop_namespace(self) -> int:
        """Delete every key of the namespace (a finished backtest); returns how many."""

        def drop() -> int:
            deleted = 0
            batch: list[bytes] = []
            pattern = keys.namespace_pattern(self._namespace)
            for key in self._client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += self._unlink(batch)
                    batch = []
            return deleted + self._unlink(batch)

        return self._guard(drop)

    # --- planning -------------------------------------------------------------------------------

    def _plan_events(
        self, events: Sequence[TransactionEvent], prepared: Sequence[EventOps]
    ) -> list[_Call]:
        ns = self._namespace
        customer_ops: list[tuple[str, bytes, int]] = []
        counterparty_ops: list[tuple[str, bytes, int]] = []
        for i, (event, ops) in enumerate(zip(events, prepared, strict=True)):
            customer_ops.append((keys.customer_base(ns, event.customer_id), ops.customer_op, i))
            kind, entity = counterparty_entity(event.terminal_id, event.counterparty_id)
            counterparty_ops.append((keys.entity_base(ns, kind, entity), ops.counterparty_op, i))
        return [
            *self._group("customer", customer_ops),
            *self._group("counterparty", counterparty_ops),
        ]

    def _group(self, script: str, ops: list[tuple[str, bytes, int]]) -> Iterator[_Call]:
        """Calls of at most ``ops_per_call`` ops; on a cluster, one hash slot per call. The
        order of one entity's ops is kept: they share a slot, and calls run in order."""
        if self._cluster:
            by_slot: dict[int, list[tuple[str, bytes, int]]] = {}
            for op in ops:
                by_slot.setdefault(key_slot(op[0].encode()), []).append(op)
            groups: list[list[tuple[str, bytes, int]]] = list(by_slot.values())
        else:
            groups = [ops]
        size = self._limits.ops_per_call
        for group in groups:
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                yield _Call(
                    script,
                    [op[0] for op in chunk],
                    [op[1] for op in chunk],
                    [op[2] for op in chunk],
                )

    # --- execution -----------------------------------------------------------------------------

    def _load_scripts(self) -> None:
        for name, source in self._sources.items():
            # RedisCluster.script_load loads on every primary; the stubs lack it.
            sha = self._client.script_load(source)  # type: ignore[union-attr]
            self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)

    def _run(self, calls: list[_Call]) -> list[Any]:
        """One pipeline: the marker check, then every call. Reloads the scripts and retries
        once after NOSCRIPT (a restarted Redis forgot them); retrying is safe because every op
        is idempotent."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            pipe.pexpire(self._marker, self._profile_ttl_ms)
            for call in calls:
                config = (
                    self._labels_config
                    if call.script == "labels"
                    else self._exposure_config
                    if call.script == "exposure"
                    else self._config
                )
                # execute_command, not .evalsha(): redis-py's cluster pipeline blocks the
                # method (it cannot see keys in general) but routes EVALSHA by its keys.
                pipe.execute_command(
                    "EVALSHA",
                    self._shas[call.script],
                    len(call.keys),
                    *call.keys,
                    config,
                    *call.args,
                )
            try:
                results = pipe.execute()
            except rexc.NoScriptError:
                if attempt == 2:
                    raise
                logger.warning("Redis forgot the context scripts (restarted?); reloading")
                self._load_scripts()
                continue
            if not results[0]:
                raise ContextStateLost(
                    f"context namespace {self._namespace!r} lost its marker key: Redis restarted "
                    "without persistence, was flushed or evicted keys; the context would "
                    "restart from nothing. Restore Redis, or accept the reset with "
                    "ContextStore.initialize_namespace()."
                )
            return list(results[1:])
        raise AssertionError("unreachable")

    def _guard(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run ``fn`` translating Redis errors into the context's own."""
        try:
            return fn(*args, **kwargs)
        except _RETRIABLE as exc:
            raise ContextUnavailable(
                f"Redis unavailable for the context store: {type(exc).__name__}: {exc}"
            ) from exc
        except rexc.RedisError as exc:
            at = str(exc).find(_LAYOUT_MISMATCH)
            if isinstance(exc, rexc.ResponseError) and at >= 0:
                raise ContextLayoutMismatch(str(exc)[at:]) from exc
            if str(exc).startswith("OOM"):
                raise ContextError(
                    "Redis is out of memory (maxmemory reached, policy noeviction): "
                    "context cannot be updated"
                ) from exc
            raise ContextError(f"context store failed: {type(exc).__name__}: {exc}") from exc

    def _unlink(self, batch: list[bytes]) -> int:
        if not batch:
            return 0
        if self._cluster:
            pipe = self._client.pipeline(transaction=False)
            for key in batch:
                pipe.unlink(key)
            return sum(int(r) for r in pipe.execute())
        return int(self._client.unlink(*batch))
