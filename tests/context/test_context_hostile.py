"""The context store against crafted input and lost state, on the real redis-server.

* Chosen counterparty ids cannot be made to look like one: the hashes that distinct counts
  use are keyed (``context.hash_key``), so a collision found offline for one key means
  nothing under another.
* Sums cannot overflow: amounts are bounded when they enter the context and every day's
  total saturates, so no number of maximum-size payments makes a window negative.
* A Redis that lost the namespace never receives any part of a batch, and only an explicit
  ``initialize_namespace`` (the scorer's ``--accept-context-loss``) marks it in use again.
* A retried batch is recognised however many events of one entity it holds.
"""

from __future__ import annotations

import pytest
import redis
from pydantic import SecretStr

from schemas import Channel, CounterpartyType, Direction
from stream.context import keys
from stream.context.errors import ContextLayoutMismatch, ContextStateLost
from stream.context.ops import MAX_CONTEXT_CENTS, event_ops
from stream.context.store import ContextLimits, ContextStore
from stream.settings import ContextSettings
from tests.reliability.hostile import crc32_twins

from .conftest import EventFactory, KeyDump, StoreFactory

MAX_MINOR = 10**14  # schemas.common.MAX_AMOUNT_MINOR
DAY_SUM_LIMIT_CENTS = 2**47 - 1  # a day's sum in the ring: a 6-byte signed integer


def test_counterparties_chosen_to_collide_in_crc32_still_count_as_distinct(
    make_event: EventFactory, make_store: StoreFactory
) -> None:
    payees = crc32_twins("acct-", 6)
    store = make_store()
    contexts = store.update_batch(
        [
            make_event(
                minute,
                counterparty=payee,
                counterparty_type=CounterpartyType.ACCOUNT,
                channel=Channel.P2P,
            )
            for minute, payee in enumerate(payees)
        ]
    )
    assert [c.features.distinct_counterparties_1h for c in contexts] == [1, 2, 3, 4, 5, 6]
    assert contexts[-1].features.new_counterparties_24h == 6


def test_the_hash_key_changes_every_hash_and_a_namespace_refuses_another_key(
    make_event: EventFactory,
    make_store: StoreFactory,
    redis_client: redis.Redis[bytes],
    redis_namespace: str,
) -> None:
    event = make_event(0, device="dev-9")
    one, other = event_ops(event, b"key one"), event_ops(event, b"key two")
    assert one.customer_op != other.customer_op
    assert one.counterparty_op != other.counterparty_op
    make_store().update_batch([event])
    other_key = ContextSettings(namespace=redis_namespace, hash_key=SecretStr("another key"))
    with pytest.raises(ContextLayoutMismatch, match="hash_key"):
        ContextStore(redis_client, other_key)


def test_maximum_amounts_cannot_overflow_a_sum(
    make_event: EventFactory, make_store: StoreFactory
) -> None:
    # GBP is worth more than USD: 10^14 pence is 1.27 * 10^14 US cents, and two of them on one
    # day overflowed the 6-byte day totals; the wrapped value later left the weekly sum.
    store = make_store()
    contexts = []
    for day in (0, 1, 2, 7):
        batch = [
            make_event(day * 1440 + i, amount_minor=MAX_MINOR, currency="GBP") for i in range(40)
        ]
        contexts += store.update_batch(batch)
    for context in contexts:
        f = context.features
        sums = (f.out_sum_1h, f.out_sum_24h, f.out_sum_7d, f.out_sum_30d, f.amount_usd)
        assert all(0 < value < 2**53 / 100 for value in sums), sums
        assert f.amount_usd == pytest.approx(MAX_CONTEXT_CENTS / 100)
    # Each day's total saturates at the 6-byte field, in the header and the ring alike, so a
    # day leaving a window takes away exactly what it added.
    day_total = DAY_SUM_LIMIT_CENTS / 100
    assert contexts[3 * 40 - 1].features.out_sum_7d == pytest.approx(3 * day_total, rel=1e-6)
    last = contexts[-1].features
    assert last.out_sum_7d == pytest.approx(3 * day_total, rel=1e-6)  # days 1, 2 and 7
    assert last.out_count_7d == 120
    assert last.out_sum_30d == pytest.approx(4 * day_total, rel=1e-6)


def test_a_wiped_namespace_receives_nothing_and_is_not_marked_again_by_a_restart(
    make_event: EventFactory,
    make_store: StoreFactory,
    redis_client: redis.Redis[bytes],
    redis_namespace: str,
    dump_keys: KeyDump,
) -> None:
    store = make_store()
    store.update_batch([make_event(0, customer="cus-w")])
    wipe(redis_client, redis_namespace)

    batch = [make_event(i, customer=f"cus-w{i}", terminal="trm-w") for i in range(1, 6)]
    with pytest.raises(ContextStateLost):
        store.update_batch(batch)
    assert dump_keys(redis_client, redis_namespace) == {}, "a partial batch was written"

    # A plain restart (a new store on the same namespace) must not mark it in use again.
    restarted = ContextStore(redis_client, ContextSettings(namespace=redis_namespace))
    assert not restarted.namespace_in_use()
    with pytest.raises(ContextStateLost):
        restarted.update_batch(batch)
    assert list(redis_client.scan_iter(match=keys.namespace_pattern(redis_namespace))) == []

    restarted.initialize_namespace()  # the operator's decision (--accept-context-loss)
    assert restarted.namespace_in_use()
    (context,) = restarted.update_batch(batch[:1])
    assert context.features.out_count_1h == 1
    restarted.close()


def test_a_wiped_namespace_receives_no_labels_and_no_exposure_marks(
    make_event: EventFactory,
    make_store: StoreFactory,
    redis_client: redis.Redis[bytes],
    redis_namespace: str,
    dump_keys: KeyDump,
) -> None:
    from tests.context.test_counterparty_risk import DAY, fraud

    store = make_store()
    visits = [
        make_event(60 + i, customer=f"cus-{i}", terminal="trm-x", counterparty="mer-x")
        for i in range(5)
    ]
    store.update_batch(visits)
    labels = [fraud(visits[0], 2 * DAY), fraud(visits[1], 2 * DAY)]
    # the labels confirm the terminal: the second round trip (exposure.lua) marks its cards
    assert store.apply_labels(labels).exposed == 5
    wipe(redis_client, redis_namespace)
    with pytest.raises(ContextStateLost):
        store.apply_labels(labels)
    assert dump_keys(redis_client, redis_namespace) == {}, "labels.lua wrote without its marker"

    # exposure.lua on its own (its marker vanished between the two round trips)
    store.initialize_namespace()
    store.update_batch(visits)
    redis_client.delete(keys.marker_key(redis_namespace))
    mark = (keys.customer_base(redis_namespace, "cus-0"), b"\0" * 16 + b"t:trm-x", 0)
    with pytest.raises(ContextStateLost):
        store._guard(store._run, list(store._group("exposure", [mark])))
    assert not redis_client.exists(keys.customer_base(redis_namespace, "cus-0") + ":x")


def wipe(client: redis.Redis[bytes], namespace: str) -> None:
    """What FLUSHALL does to one namespace (the session's Redis is shared by other tests)."""
    found = list(client.scan_iter(match=keys.namespace_pattern(namespace), count=1000))
    if found:
        client.delete(*found)


def test_a_retried_batch_with_more_events_of_one_entity_than_the_memory_counts_once(
    make_event: EventFactory, make_store: StoreFactory
) -> None:
    # 20 events of one customer and one counterparty in a batch, a memory of 8 ids and calls
    # of 6 ops: the retry of the whole batch must still recognise every event.
    limits = ContextLimits(dedupe_cap=8, ops_per_call=6)
    batch = [make_event(i, terminal="trm-busy", direction=Direction.OUTBOUND) for i in range(20)]
    reference = make_store("-reference").update_batch(batch)
    store = make_store(limits=limits)
    first = store.update_batch(batch)
    again = store.update_batch(batch)
    assert [c.features for c in first] == [c.features for c in reference]
    assert all(c.duplicate for c in again)
    assert [c.features for c in again] == [c.features for c in reference]
    (after,) = store.update_batch([make_event(21, terminal="trm-busy")])
    assert after.features.out_count_1h == 21
    assert after.features.cp_count_24h == 21
