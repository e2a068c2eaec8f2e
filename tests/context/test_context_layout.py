"""State of another layout version is refused, on the real Redis, before anything is written."""

from __future__ import annotations

import struct

import pytest

from stream.context import keys
from stream.context.errors import ContextError, ContextLayoutMismatch

pytestmark = pytest.mark.integration

LAYOUT_VERSION = 4  # the first header double of every state blob (customer.lua, counterparty.lua)
VERSION = struct.Struct("<d")  # the header's format: little-endian doubles from byte 0


# 1: past days in a hash; 3: what two branches each called 3 (keyed hashes / maturity, story)
@pytest.mark.parametrize("old_version", [1, 3])
@pytest.mark.parametrize("kind", [keys.CUSTOMER, keys.COUNTERPARTY])
def test_a_blob_of_an_older_layout_fails_the_call_before_it_writes(
    kind, old_version, make_event, make_store, redis_client, dump_keys
) -> None:
    store = make_store()
    ns = store.namespace
    # two entities of each kind, each with a past day (the customer's ':d' ring, the
    # counterparty's in-blob ring)
    store.update_batch(
        [
            make_event(day * 1440 + i, customer=f"cus-{i}", counterparty=f"mer-{i}")
            for day in (0, 1)
            for i in (1, 2)
        ]
    )
    for i in (1, 2):
        for base in (keys.customer_base(ns, f"cus-{i}"), keys.counterparty_base(ns, f"mer-{i}")):
            blob = redis_client.get(base + ":s")
            assert blob is not None
            assert VERSION.unpack_from(blob) == (LAYOUT_VERSION,)

    # entity 2's blob as older scripts wrote it (SETRANGE keeps the TTL)
    old = keys.entity_base(ns, kind, f"{'cus' if kind == keys.CUSTOMER else 'mer'}-2")
    redis_client.setrange(old + ":s", 0, VERSION.pack(old_version))
    if kind == keys.CUSTOMER and old_version == 1:
        # version 1 kept past days in a hash: a GET of it would fail with WRONGTYPE
        redis_client.delete(old + ":d")
        redis_client.hset(old + ":d", "20150", b"\0" * 28)
    before = dump_keys(redis_client, ns, kind)
    assert len(before) >= 4  # both entities' keys

    # entity 1 comes first in the call and rolls a day: the old driver applied it before
    # loading entity 2; now every entity of the call is checked before any op runs
    first, second = (
        make_event(3 * 1440 + i, customer=f"cus-{i}", counterparty=f"mer-{i}") for i in (1, 2)
    )
    batch = [first, second, first]
    for _ in range(2):  # not transient: the retry a scorer might attempt fails the same way
        with pytest.raises(ContextLayoutMismatch) as raised:
            store.update_batch(batch)
        message = str(raised.value)
        assert message.startswith(
            f"riskstream context layout {old_version} found in {old}:s, this code writes "
            f"{LAYOUT_VERSION}: "
            "use a fresh namespace (RISKSTREAM_CONTEXT__NAMESPACE)"
        ), message
        assert isinstance(raised.value, ContextError)
        assert not raised.value.retriable

        assert dump_keys(redis_client, ns, kind) == before

    # a fresh namespace takes the same batch
    fresh = make_store("-fresh")
    assert [c.duplicate for c in fresh.update_batch(batch)] == [False, False, True]
