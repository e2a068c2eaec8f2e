"""The customer's story (customer.lua's last-K memory) on the real Redis: what it tells, the
out-of-order rule, idempotency, bounds, replays and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import Channel, CounterpartyType, Direction, TransactionEvent
from schemas.story import STORY_FEATURES, StoryEntry
from stream.context.store import ContextStore
from stream.devenv import RedisServer, free_ports
from stream.redis_client import connect
from stream.settings import ContextSettings, RedisSettings
from tests.context.test_context_oracle import batches, random_stream
from tests.context.test_context_restart import PersistentRedis

pytestmark = pytest.mark.integration


def reference_stories(events: list[TransactionEvent], k: int) -> list[list[tuple[str, int]]]:
    """(counterparty, seconds before) of each event's story, newest first, by the documented
    rule: a customer's last ``k`` events by time (ties in arrival order); an event's story is
    the remembered ones before it; an event older than everything in a full memory is not
    remembered."""
    memory: dict[str, list[TransactionEvent]] = {}
    out = []
    for e in events:
        kept = memory.setdefault(e.customer_id, [])
        t = int(e.event_time.timestamp())
        before = [x for x in kept if int(x.event_time.timestamp()) <= t]
        out.append(
            [(x.counterparty_id, t - int(x.event_time.timestamp())) for x in reversed(before)]
        )
        if before or len(kept) < k:
            kept.insert(len(before), e)
            del kept[:-k]
    return out


def told(entries: tuple[StoryEntry, ...], events: dict[int, str]) -> list[tuple[str, int]]:
    return [(events.get(i, "?"), e.seconds_before) for i, e in enumerate(entries)]


@pytest.mark.parametrize("k", [4, 16])
def test_the_story_tells_the_last_events_newest_first_out_of_order_included(
    make_event, make_store, k: int
) -> None:
    events = random_stream(make_event, seed=13, count=300)
    store = make_store(tolerance_s=3600, story_events=k)
    contexts = [c for batch in batches(events, (9, 1, 40)) for c in store.update_batch(batch)]
    expected = reference_stories(events, k)
    for event, context, want in zip(events, contexts, expected, strict=True):
        assert len(context.story) <= k
        assert [e.seconds_before for e in context.story] == [s for _, s in want]
        # the relation to this event's counterparty, without ids
        same = [cp == event.counterparty_id for cp, _ in want]
        assert [e.same_counterparty for e in context.story] == same
    assert any(len(c.story) == k for c in contexts)


def test_story_entries_carry_kind_amount_and_novelty(make_event, make_store) -> None:
    store = make_store()
    payee = dict(counterparty_type=CounterpartyType.ACCOUNT, channel=Channel.P2P)
    history = [
        make_event(i * 60, amount_usd=25.0, counterparty="acc-old", **payee) for i in range(4)
    ]
    store.update_batch(history)
    test_payment = make_event(300, amount_usd=1.0, counterparty="acc-new", device="dev-x", **payee)
    drain = make_event(
        310,
        amount_usd=5000.0,
        counterparty="acc-new",
        channel=Channel.WIRE,
        counterparty_type=CounterpartyType.ACCOUNT,
        country="NG",
    )
    incoming = make_event(305, direction=Direction.INBOUND, amount_usd=300.0, **payee)
    first, _, last = store.update_batch([test_payment, incoming, drain])
    (newest, older, *_) = last.story
    assert older.amount_usd == pytest.approx(1.0, rel=1e-3)
    assert older.counterparty_new
    assert older.device_new
    assert older.same_counterparty
    assert newest.outbound is False
    assert not newest.same_counterparty
    assert newest.seconds_before == 5 * 60
    assert first.story[0].amount_usd == pytest.approx(25.0, rel=1e-3)
    # the story in numbers: two earlier payments to the drain's payee, rising in amount
    f = last.features
    assert f.story_events == 6
    assert f.story_same_counterparty == 1
    assert f.story_same_counterparty_rising == 1
    assert f.story_small == 1
    assert f.story_inbound == 1
    assert STORY_FEATURES[0] == "story_events"


def test_the_story_is_idempotent_twice_or_half_then_whole(make_event, make_store) -> None:
    # within the dedupe memory's span (docs/context.md, Idempotency): five hours of traffic
    events = [
        make_event(i * 2.5, customer=f"cus-{i % 4}", counterparty=f"mer-{i % 7}")
        for i in range(120)
    ]
    once = make_store("-once")
    reference = once.update_batch(events)
    again = make_store("-again")
    again.update_batch(events[:50])
    whole = again.update_batch(events)  # a retried batch, half of it applied before
    twice = again.update_batch(events)
    for a, b, c in zip(reference, whole, twice, strict=True):
        assert a.story == b.story == c.story
        assert a.features == b.features == c.features
    assert all(c.duplicate for c in twice)


def test_a_replay_in_a_fresh_namespace_tells_the_same_stories(make_event, make_store) -> None:
    events = random_stream(make_event, seed=17, count=200)
    a = [c.story for b in batches(events, (7,)) for c in make_store("-a").update_batch(b)]
    b = [c.story for b in batches(events, (64, 1)) for c in make_store("-b").update_batch(b)]
    assert a == b


def test_the_story_survives_a_redis_restart_with_aof(tmp_path: Path, make_event) -> None:
    server: RedisServer = PersistentRedis(free_ports(1)[0], tmp_path / "redis")
    server.start()
    try:
        store = ContextStore(
            connect(RedisSettings(url=server.url, socket_timeout_s=1.0)),
            ContextSettings(namespace="story"),
            create_namespace=True,
        )
        first = [make_event(i, customer="cus-s", counterparty=f"m-{i}") for i in range(6)]
        store.update_batch(first)
        server.kill()
        server.start()
        (after,) = store.update_batch([make_event(10, customer="cus-s", counterparty="m-9")])
        assert [e.seconds_before for e in after.story] == [(10 - i) * 60 for i in range(5, -1, -1)]
        store.close()
    finally:
        server.stop()
