"""What the context store returns, and how the scripts' replies become it.

Kept apart from ``store`` (which plans the calls and runs them) so the result types can be
imported without Redis, and each module stays readable: ``EventContext`` per event,
``LabelApplyResult`` per batch of labels, ``PendingContexts`` for a submitted batch, and the
decoding of customer.lua's records (features, then the story), counterparty.lua's records and
labels.lua's exposure lists.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

from schemas.features import (
    COUNTERPARTY_RECORD,
    CUSTOMER_RECORD,
    ContextFeatures,
    assemble,
)
from schemas.story import StoryEntry, decode_story, story_features
from schemas.transaction import TransactionEvent
from stream.context.errors import ContextError
from stream.context.ops import EventOps

_CUSTOMER_VALUES: Final = struct.Struct("<" + "f" * len(CUSTOMER_RECORD))
_COUNTERPARTY_RECORD: Final = struct.Struct("<B" + "f" * len(COUNTERPARTY_RECORD))
_DOUBLE: Final = struct.Struct("<d")


@dataclass(slots=True)
class ScriptCall:
    script: str  # "customer", "counterparty", "labels" or "exposure"
    keys: list[str]  # the slot's marker, then one entity base key per op
    args: list[bytes]
    targets: list[int]  # per op: where its result goes


def script_call(script: str, marker: str, ops: list[tuple[str, bytes, int]]) -> ScriptCall:
    return ScriptCall(
        script, [marker, *(op[0] for op in ops)], [op[1] for op in ops], [op[2] for op in ops]
    )


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
        calls: list[ScriptCall],
        story_bytes: int = 0,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._future = future
        self._on_failure = on_failure
        self._events = events
        self._prepared = prepared
        self._calls = calls
        self._story_bytes = story_bytes

    def result(self, timeout: float | None = None) -> list[EventContext]:
        """The contexts, in the batch's order; raises what ``update_batch`` raises."""
        if self._future is None:
            return []
        try:
            outputs = self._future.result(timeout)
        except Exception:
            # Seen by the caller: batches it submits from now on are applied again.
            if self._on_failure is not None and self._future.done():
                self._on_failure()
            raise
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
    call: ScriptCall,
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


def collect_marks(
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
