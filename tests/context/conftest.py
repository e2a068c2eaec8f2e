"""Fixtures of the context-store tests: an event factory and a store on the test namespace."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from schemas import Channel, CounterpartyType, Direction, TransactionEvent
from stream.context import keys
from stream.context.store import ContextLimits, ContextStore
from stream.settings import ContextSettings

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday

EventFactory = Callable[..., TransactionEvent]
StoreFactory = Callable[..., ContextStore]


@pytest.fixture
def make_event() -> EventFactory:
    """``make_event(minutes=..., customer=..., amount_usd=..., ...)``: a valid event with
    unique id; ``minutes`` is the offset from T0 (a Monday 09:00 UTC)."""
    ids = itertools.count()

    def make(
        minutes: float = 0.0,
        *,
        customer: str = "cus-1",
        counterparty: str = "mer-1",
        counterparty_type: CounterpartyType = CounterpartyType.MERCHANT,
        direction: Direction = Direction.OUTBOUND,
        channel: Channel = Channel.CARD,
        amount_usd: float = 20.0,
        currency: str = "USD",
        amount_minor: int | None = None,
        country: str = "US",
        device: str | None = "dev-1",
        terminal: str | None = None,
        mcc: str | None = None,
        event_id: str | None = None,
        **extra: Any,
    ) -> TransactionEvent:
        return TransactionEvent(
            event_id=event_id or f"ev-{next(ids)}",
            event_time=T0 + timedelta(minutes=minutes),
            customer_id=customer,
            account_id=f"acc-{customer}",
            channel=channel,
            direction=direction,
            amount_minor=amount_minor if amount_minor is not None else round(amount_usd * 100),
            currency=currency,
            counterparty_id=counterparty,
            counterparty_type=counterparty_type,
            terminal_id=terminal,
            mcc=mcc,
            country=country,
            device_id=device,
            **extra,
        )

    return make


@pytest.fixture
def make_store(redis_client: redis.Redis[bytes], redis_namespace: str) -> Iterator[StoreFactory]:
    """``make_store(suffix="", limits=None, tolerance_s=3600, **settings)`` on the test's
    namespace (more ContextSettings fields as keywords); a suffix gives a second, separate
    namespace (dropped after the test)."""
    stores: list[ContextStore] = []

    def make(
        suffix: str = "",
        limits: ContextLimits | None = None,
        tolerance_s: int = 3600,
        **settings_fields: Any,
    ) -> ContextStore:
        settings = ContextSettings(
            namespace=redis_namespace + suffix,
            out_of_order_tolerance_s=tolerance_s,
            **settings_fields,
        )
        store = ContextStore(redis_client, settings, limits, create_namespace=True)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
        if store.namespace != redis_namespace:
            store.drop_namespace()


KeyDump = Callable[..., dict[bytes, object]]


@pytest.fixture
def dump_keys() -> KeyDump:
    """``dump_keys(client, namespace, kind=None)``: every key of the namespace (the marker
    excluded) with its value, or its type where it is not a string, hash or zset; ``kind``
    (e.g. ``keys.CUSTOMER``) keeps only that kind's entities. For "nothing changed" checks."""

    def dump(
        client: redis.Redis[bytes], namespace: str, kind: str | None = None
    ) -> dict[bytes, object]:
        out: dict[bytes, object] = {}
        for key in client.scan_iter(match=keys.namespace_pattern(namespace), count=1000):
            if key.endswith(b"marker") or (kind and f"{{{kind}:".encode() not in key):
                continue
            kind_of = client.type(key)
            if kind_of == b"string":
                out[key] = client.get(key)
            elif kind_of == b"hash":
                out[key] = client.hgetall(key)
            elif kind_of == b"zset":
                out[key] = client.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = kind_of
        return out

    return dump
