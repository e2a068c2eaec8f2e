"""Redis key names of the context store.

Every key starts with the namespace (``settings.context.namespace``), so a backtest in its own
namespace never reads or writes live state, and deleting a namespace is one ``SCAN MATCH``.
One entity's keys share a Redis Cluster hash tag - ``{c:<customer_id>}``, ``{p:<counterparty_id>}``
or ``{t:<terminal_id>}`` - so they live in one hash slot and one Lua script may touch them all.
Identifiers cannot contain braces (see ``schemas.common.Identifier``), so the tag is exact.

Suffixes under an entity base key (see docs/context.md for sizes and TTLs):

* customer ``{c:..}``: ``:s`` state blob (profile, recent-event log, recent outbound transfers,
  dedupe memory with feature snapshots), ``:d`` past-day totals, ``:k`` hash of first-seen
  counterparties, devices and countries, ``:z`` zset of inbound senders.
* counterparty ``{p:..}`` and terminal ``{t:..}``: ``:s`` state blob (profile, hourly counts,
  dedupe memory), ``:d`` past-day counts, ``:u`` zset of customers, ``:b`` zset of fraud labels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

CUSTOMER: Final = "c"
COUNTERPARTY: Final = "p"
TERMINAL: Final = "t"

CUSTOMER_SUFFIXES: Final = (":s", ":d", ":k", ":z", ":x")
COUNTERPARTY_SUFFIXES: Final = (":s", ":d", ":u", ":b")


def entity_base(namespace: str, kind: str, entity_id: str) -> str:
    """``<namespace>:{<kind>:<id>}``: the prefix of every key of one entity."""
    return f"{namespace}:{{{kind}:{entity_id}}}"


def customer_base(namespace: str, customer_id: str) -> str:
    return entity_base(namespace, CUSTOMER, customer_id)


def counterparty_base(namespace: str, counterparty_id: str) -> str:
    return entity_base(namespace, COUNTERPARTY, counterparty_id)


def terminal_base(namespace: str, terminal_id: str) -> str:
    return entity_base(namespace, TERMINAL, terminal_id)


def entity_keys(base: str) -> tuple[str, ...]:
    """All keys one entity may own, for memory accounting and tests."""
    kind = base[base.index("{") + 1]
    suffixes = CUSTOMER_SUFFIXES if kind == CUSTOMER else COUNTERPARTY_SUFFIXES
    return tuple(base + suffix for suffix in suffixes)


def marker_key(namespace: str) -> str:
    """The namespace's marker; its disappearance means Redis lost the namespace's state."""
    return f"{namespace}:{{meta}}:marker"


@lru_cache(maxsize=1)
def slot_tags() -> tuple[str, ...]:
    """For each Redis Cluster hash slot, a hash tag that maps to it (``m<n>``, the first n that
    does): ~170,000 CRC16s, computed once per process (~0.4 s) and only on a cluster."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    n = 0
    while missing:
        tag = f"m{n}"
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(tag for tag in tags if tag is not None)


def slot_marker_key(namespace: str, slot: int) -> str:
    """The marker of one hash slot (Redis Cluster): a script may only touch keys of its own
    slot, so each slot's calls check a marker of their own; its disappearance means the node
    serving that slot lost the namespace's state (docs/context.md, "Lost state")."""
    return f"{namespace}:{{{slot_tags()[slot]}}}:marker"


def namespace_pattern(namespace: str) -> str:
    """``SCAN MATCH`` pattern of every key in ``namespace`` (glob characters escaped)."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in namespace)
    return escaped + ":*"
