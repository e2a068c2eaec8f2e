"""`ContextStore`: rolling customer and counterparty context in Redis, one micro-batch at a time.

A batch costs one Redis round trip: a pipeline of ``EVALSHA`` calls of the customer and
counterparty scripts. On a standalone Redis that is one call per script for the whole batch
(chunked at about ``ContextLimits.ops_per_call`` ops so one call never blocks Redis for long);
on Redis Cluster one call per hash slot and script. Every call first checks the namespace
marker of its slot and writes nothing if it is gone (Redis lost the namespace). Every
read-modify-write happens inside Lua, so workers never race, and each entity's update is
idempotent per event id, so a retried batch changes nothing and returns the same snapshots.

See docs/context.md for the state layout, windows, out-of-order rule and measured sizes.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, ParamSpec, TypeVar

import redis
import redis.cluster
import redis.exceptions as rexc
from redis.crc import REDIS_CLUSTER_HASH_SLOTS as REDIS_SLOTS
from redis.crc import key_slot

from schemas.label import LabelEvent
from schemas.reference import DEFAULT_LABEL_MATURITY_DAYS
from schemas.story import ENTRY
from schemas.transaction import TransactionEvent
from stream.context import keys
from stream.context.errors import (
    ContextError,
    ContextLayoutMismatch,
    ContextStateLost,
    ContextUnavailable,
)
from stream.context.ops import (
    CONFIG,
    DEVELOPMENT_HASH_KEY,
    EventOps,
    counterparty_entity,
    event_ops,
    label_op,
)
from stream.context.results import (
    EventContext,
    LabelApplyResult,
    PendingContexts,
    ScriptCall,
    collect_marks,
    script_call,
)
from stream.context.reveal import changes_context
from stream.redis_client import AnyRedis
from stream.settings import ContextSettings

__all__ = [  # the result types (results.py) are part of this module's API
    "ContextLimits",
    "ContextStore",
    "EventContext",
    "LabelApplyResult",
    "PendingContexts",
    "marker_value",
]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

_DAY_MS: Final = 86_400_000
_LABELS_CONFIG: Final = struct.Struct("<ddddddd")
_EXPOSURE_CONFIG: Final = struct.Struct("<ddd")
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
# The scripts' error replies for a state blob of another layout version and for a missing
# namespace marker (see common.lua); a pipeline prefixes the command to the message, so they
# are searched for, not matched at the start.
_LAYOUT_MISMATCH: Final = "riskstream context layout "
_MARKER_MISSING: Final = "riskstream context marker "


def marker_value(hash_key: bytes) -> bytes:
    """What the namespace marker holds: a fingerprint of the hash key (a keyed hash of a
    constant, which tells nothing about the key), so a store opened with another key - whose
    hashes would not match the stored ones - is refused instead of silently miscounting."""
    fingerprint = hashlib.blake2b(b"riskstream namespace marker", key=hash_key[:64], digest_size=8)
    return b"riskstream-context " + fingerprint.hexdigest().encode()


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
    """Event ids (with their feature snapshots) remembered per entity, beyond those of the
    entity's last call (always kept)... The scorer's claims recognise every event whose scored
    record was written; this memory covers the rest: the batch in flight when a scorer died or
    Redis failed, until it is redelivered (docs/context.md, "Idempotency", has the sizing)."""
    dedupe_span_s: int = 6 * 3600
    """...and while the entity's newest event time is less than this past their arrival."""
    labels_cap: int = 1024
    """Fraud labels kept per counterparty (the oldest-known go first)."""
    exposure_fanout_cap: int = 512
    """Customers marked per fraud label at a compromised point (its customers of the days
    around the fraud; the earliest payments first). Bounds the work one label can cause."""
    exposure_marks_cap: int = 32
    """Payments at compromised points remembered per customer."""
    ops_per_call: int = 512
    """Ops per EVALSHA: bounds how long one script call blocks Redis (~10 ms)."""


def _script_source(name: str) -> str:
    return (resources.files("stream.context") / name).read_text(encoding="utf-8")


def _entity_script(name: str) -> str:
    # "#!lua" (no flags): Redis 7 rejects the whole call up front when over maxmemory, instead
    # of failing half-way through a batch.
    # The customer script adds the sliding-window helpers (window.lua) to the shared prelude.
    parts = ("common.lua", "window.lua") if name == "customer.lua" else ("common.lua",)
    return "#!lua\n" + "".join(_script_source(part) for part in (*parts, name, "main.lua"))


class ContextStore:
    """Rolling context in the namespace ``settings.namespace``.

    ``client`` must return bytes (``decode_responses=False``), as
    :func:`stream.redis_client.connect` does. ``create_namespace`` marks the namespace as in
    use when it is not: for namespaces the caller has just made up (a backtest, a dataset, a
    test). Otherwise nothing marks it but :meth:`initialize_namespace`, the operator's
    decision after a loss (see :class:`ContextStateLost`): a plain restart must not.
    """

    def __init__(
        self,
        client: AnyRedis,
        settings: ContextSettings,
        limits: ContextLimits | None = None,
        *,
        create_namespace: bool = False,
        label_maturity_days: int | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._limits = limits or ContextLimits()
        self._namespace = settings.namespace
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._marker = keys.marker_key(self._namespace)
        self._hash_key = (
            settings.hash_key.get_secret_value().encode()
            if settings.hash_key is not None
            else DEVELOPMENT_HASH_KEY
        )
        self._marker_value = marker_value(self._hash_key)
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
            float(self._profile_ttl_ms),  # the marker's TTL (labels.lua checks it first)
            float(settings.compromise_min_frauds),
            settings.compromise_min_share,
            settings.exposure_before_days * _DAY_MS,
            float(lim.exposure_fanout_cap),
        )
        # Marks live as long as they can count (the exposure window), at least as the windows.
        self._exposure_config = _EXPOSURE_CONFIG.pack(
            float(max(self._ttl_ms, (settings.exposure_window_days + 1) * _DAY_MS)),
            float(lim.exposure_marks_cap),
            float(self._profile_ttl_ms),
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
        # Submission order survives a failure (see submit_batch): batches submitted in an epoch
        # after one of that epoch failed are refused; the caller learning of a failure opens
        # the next epoch.
        self._epoch = 0
        self._failed_epoch = -1
        self._guard(self._load_scripts)
        if create_namespace:
            self._guard(self.initialize_namespace, only_if_missing=True)
        self._guard(self.namespace_in_use)  # refuses a namespace marked with another hash key

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
            log.info("counterparty risk now uses a label maturity of %d days", days)
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

    @property
    def uses_development_hash_key(self) -> bool:
        return self._hash_key == DEVELOPMENT_HASH_KEY

    def namespace_in_use(self) -> bool:
        """Whether the namespace is marked in use. Raises :class:`ContextLayoutMismatch` when
        it was marked by a store with another ``hash_key`` (its hashes would not match)."""
        found = self._client.get(self._marker)
        if found is None:
            return False
        if found != self._marker_value:
            raise ContextLayoutMismatch(
                f"context namespace {self._namespace!r} was written with another "
                "context.hash_key (or by an older riskstream): its counterparty, device and "
                "event-id hashes would not match. Use the key it was written with, a fresh "
                "namespace (RISKSTREAM_CONTEXT__NAMESPACE), or drop it"
            )
        return True

    def initialize_namespace(self, only_if_missing: bool = False) -> None:
        """Mark the namespace as in use (again). Call after :class:`ContextStateLost` only to
        accept that the context starts from nothing. On a cluster, every hash slot's marker
        is (re)created too."""
        markers = [self._marker]
        if self._cluster:
            markers += [keys.slot_marker_key(self._namespace, s) for s in range(REDIS_SLOTS)]
        pipe = self._client.pipeline(transaction=False)
        for marker in markers:
            pipe.set(marker, self._marker_value, px=self._profile_ttl_ms, nx=only_if_missing)
        pipe.execute()

    def prepare(self, event: TransactionEvent) -> EventOps:
        """What ``event`` contributes to the context (pure; raises on an event it cannot
        represent, so a caller can set that one event aside before submitting a batch)."""
        return event_ops(event, self._hash_key)

    def update_batch(
        self, events: Sequence[TransactionEvent], prepared: Sequence[EventOps] | None = None
    ) -> list[EventContext]:
        """Apply ``events`` in order and return each one's context, in the same order.
        ``prepared``: their :meth:`prepare` results, when the caller has them already.

        Raises :class:`ContextUnavailable` (retry the whole batch later),
        :class:`ContextStateLost` (the namespace marker is gone; nothing was written),
        :class:`ContextLayoutMismatch` (state of another layout version; the script call that
        met it wrote nothing) or :class:`ContextError`.
        """
        return self.submit_batch(events, prepared).result()

    def submit_batch(
        self, events: Sequence[TransactionEvent], prepared: Sequence[EventOps] | None = None
    ) -> PendingContexts:
        """Start applying ``events``; the contexts come from ``.result()``.

        Batches run one at a time, in submission order, on one background thread, so while
        Redis applies batch k+1 the caller can narrate and score batch k: Redis and Python then
        use both cores instead of taking turns. A batch's contexts never depend on whether
        later batches were submitted. (``update_batch`` is ``submit_batch(...).result()``.)

        A failure keeps the order too: once a batch fails, the batches submitted before its
        ``.result()`` raised are not applied (they raise ContextUnavailable, having written
        nothing), so a caller that begins batch k+1 before it learns that batch k failed can
        retry k and then k+1, and Redis never applies k+1's events before k's.
        """
        if not events:
            return PendingContexts(None, [], [], [])
        ops = list(prepared) if prepared is not None else [self.prepare(e) for e in events]
        calls = self._plan_events(events, ops)
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="context-store")
            future = self._executor.submit(self._apply_in_order, self._epoch, calls)
        return PendingContexts(
            future, events, ops, calls, self._story_bytes, on_failure=self._failure_seen
        )

    def _apply_in_order(self, epoch: int, calls: list[ScriptCall]) -> list[Any]:
        """On the store's thread: ``calls``, unless a batch submitted before them in their
        epoch failed."""
        if self._failed_epoch == epoch:
            raise ContextUnavailable(
                "not applied: a context batch submitted before it failed, and must be applied "
                "again first"
            )
        try:
            return self._guard(self._run, calls)
        except BaseException:
            self._failed_epoch = epoch
            raise

    def _failure_seen(self) -> None:
        """A submitted batch's failure reached its caller: what it submits now is applied."""
        with self._executor_lock:
            self._epoch += 1

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
            if not changes_context(label):
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
            if not isinstance(output, list) or len(output) != len(call.args):
                raise ContextError("unexpected reply from the labels script")
            # call.keys[0] is the slot's marker; the entity keys follow, one per op
            for key, op, reply in zip(call.keys[1:], call.args, output, strict=True):
                added, exposed = reply
                applied += int(added)
                if exposed:
                    collect_marks(key, op, exposed, marks)
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
    ) -> list[ScriptCall]:
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

    def _group(self, script: str, ops: list[tuple[str, bytes, int]]) -> Iterator[ScriptCall]:
        """Calls of about ``ops_per_call`` ops; on a cluster, one hash slot per call. All ops
        of one entity go into one call, in their order: a call is what a retry repeats, and
        the dedupe memory keeps every id of an entity's last call (common.lua). A chunk closes
        at the first entity boundary past the size, so one very busy entity makes a bigger
        call rather than being split."""
        by_entity: dict[str, list[tuple[str, bytes, int]]] = {}
        for op in ops:
            by_entity.setdefault(op[0], []).append(op)
        groups: dict[int, list[list[tuple[str, bytes, int]]]] = {}
        for base, entity_ops in by_entity.items():
            slot = key_slot(base.encode()) if self._cluster else 0
            groups.setdefault(slot, []).append(entity_ops)
        size = self._limits.ops_per_call
        for slot, entities in groups.items():
            marker = keys.slot_marker_key(self._namespace, slot) if self._cluster else self._marker
            chunk: list[tuple[str, bytes, int]] = []
            for entity_ops in entities:
                chunk.extend(entity_ops)
                if len(chunk) >= size:
                    yield script_call(script, marker, chunk)
                    chunk = []
            if chunk:
                yield script_call(script, marker, chunk)

    # --- execution -----------------------------------------------------------------------------

    def _load_scripts(self) -> None:
        for name, source in self._sources.items():
            # RedisCluster.script_load loads on every primary; the stubs lack it.
            sha = self._client.script_load(source)  # type: ignore[union-attr]
            self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)

    def _run(self, calls: list[ScriptCall]) -> list[Any]:
        """One pipeline of every call (each checks its slot's marker first). Reloads the
        scripts and retries once after NOSCRIPT (a restarted Redis forgot them); retrying is
        safe because every op is idempotent."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
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
                log.warning("Redis forgot the context scripts (restarted?); reloading")
                self._load_scripts()
                continue
            return list(results)
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
            if isinstance(exc, rexc.ResponseError) and _MARKER_MISSING in str(exc):
                raise ContextStateLost(
                    f"context namespace {self._namespace!r} lost its marker key: Redis "
                    "restarted without persistence, was flushed or evicted keys, and nothing of "
                    "this batch was written. Restore Redis, or accept that the context restarts "
                    "from nothing (the scorer's --accept-context-loss)."
                ) from exc
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
