"""ContextStore on the real Redis: event-time windows, idempotency, concurrency, replays, labels,
bounds, TTLs and round trips."""

from __future__ import annotations

import struct
import threading
from datetime import timedelta
from typing import Any

import pytest
import redis

from schemas import Channel, CounterpartyType, Direction, LabelEvent, LabelSource, Typology
from schemas.narrative import build_narrative, default_spec
from stream.context import keys
from stream.context.errors import ContextLayoutMismatch, ContextUnavailable
from stream.context.store import ContextLimits

pytestmark = pytest.mark.integration


def test_windows_follow_event_time_not_arrival(make_event, make_store) -> None:
    store = make_store()
    # all sent within a second of wall clock; event times span 40 days
    minutes = [0, 30, 59, 61, 60 * 23, 60 * 25, 60 * 24 * 6.5, 60 * 24 * 8, 60 * 24 * 31]
    contexts = store.update_batch([make_event(m, amount_usd=10) for m in minutes])
    f = [c.features for c in contexts]
    assert [x.out_count_1h for x in f] == [1, 2, 3, 3, 1, 1, 1, 1, 1]
    assert [x.out_count_24h for x in f] == [1, 2, 3, 4, 5, 3, 1, 1, 1]
    assert [x.out_sum_24h for x in f] == [10 * x.out_count_24h for x in f]
    # 7d and 30d are UTC-day-granular. T0 is 09:00, so the events fall on days
    # 0, 0, 0, 0, 1 (08:00 next day), 1, 6, 8 and 31
    assert [x.out_count_7d for x in f] == [1, 2, 3, 4, 5, 6, 7, 2, 1]
    assert [x.out_count_30d for x in f] == [1, 2, 3, 4, 5, 6, 7, 8, 3]
    assert f[-1].seconds_since_previous == pytest.approx(23 * 86400, rel=1e-6)


def test_out_of_order_within_tolerance_is_computed_as_of_its_own_time(make_event, make_store):
    store = make_store(tolerance_s=3600)
    first = store.update_batch([make_event(0), make_event(40), make_event(50)])
    assert [c.features.out_count_1h for c in first] == [1, 2, 3]
    # arrives after the event at minute 50, but happened at minute 20
    (late_ish,) = store.update_batch([make_event(20, amount_usd=5)])
    assert late_ish.features.late == 0
    assert late_ish.features.out_count_1h == 2  # minutes 0 and 20: what arrived, up to its time
    assert late_ish.features.seconds_since_previous == pytest.approx(20 * 60)
    # the next on-time event sees it
    (after,) = store.update_batch([make_event(55)])
    assert after.features.out_count_1h == 5
    assert after.features.out_sum_1h == pytest.approx(85)


def test_events_later_than_the_tolerance_still_count_and_are_flagged(make_event, make_store):
    store = make_store(tolerance_s=600)
    store.update_batch([make_event(0), make_event(180)])
    (late,) = store.update_batch([make_event(100)])
    assert late.features.late == 1
    (next_one,) = store.update_batch([make_event(181)])
    assert next_one.features.late == 0
    assert next_one.features.out_count_24h == 4


def test_reprocessing_a_batch_changes_nothing_and_returns_the_same_context(
    make_event, make_store, redis_client, redis_namespace, dump_keys
) -> None:
    store = make_store()
    batch = [
        make_event(i * 7, customer=f"cus-{i % 3}", counterparty=f"mer-{i % 4}", terminal="trm-1")
        for i in range(40)
    ]
    first = store.update_batch(batch)
    state = dump_keys(redis_client, redis_namespace)
    ttl_before = {k: redis_client.pttl(k) for k in state}
    again = store.update_batch(batch)
    assert all(c.duplicate for c in again)
    assert not any(c.duplicate for c in first)
    assert [c.features for c in again] == [c.features for c in first]
    assert dump_keys(redis_client, redis_namespace) == state
    # not even a TTL was refreshed
    assert all(redis_client.pttl(k) <= ttl_before[k] for k in state)


def test_a_batch_retried_after_half_of_it_was_applied_counts_each_event_once(
    make_event, make_store
) -> None:
    # An outage cuts a batch's pipeline half-way; the scorer retries the whole batch. The
    # batch spans more event time than the dedupe memory (6 h), so its applied half moved the
    # customer's newest time past the span of its first events: they must still be known.
    batch = [make_event(minute, amount_usd=10) for minute in (0, 60, 400, 500, 600)]
    reference = make_store("-reference").update_batch(batch)
    store = make_store()
    store.update_batch(batch[:4])  # what Redis applied before it went away
    retried = store.update_batch(batch)
    assert [c.duplicate for c in retried] == [True, True, True, True, False]
    assert [c.features for c in retried] == [c.features for c in reference]


def test_a_duplicate_inside_one_batch_counts_once(make_event, make_store) -> None:
    store = make_store()
    event = make_event(0)
    a, b, c = store.update_batch([event, event, make_event(1)])
    assert (a.duplicate, b.duplicate, c.duplicate) == (False, True, False)
    assert a.features == b.features
    assert c.features.out_count_1h == 2
    assert c.features.cp_count_24h == 2


def test_two_workers_on_different_customers_stay_correct(make_event, make_store, redis_url) -> None:
    """Two stores on two connections apply interleaved batches concurrently; customer context
    equals a sequential run, and no counterparty update is lost."""
    per_worker = 300
    streams = {
        worker: [
            make_event(
                i * 0.2,
                customer=f"{worker}-cus-{i % 7}",
                counterparty=f"mer-{i % 3}",
            )
            for i in range(per_worker)
        ]
        for worker in ("a", "b")
    }
    namespace = make_store().namespace
    results: dict[str, list[Any]] = {}
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
        try:
            from stream.context.store import ContextStore
            from stream.settings import ContextSettings

            with ContextStore(
                client, ContextSettings(namespace=namespace), create_namespace=True
            ) as store:
                out = []
                for start in range(0, per_worker, 5):
                    out.extend(store.update_batch(streams[worker][start : start + 5]))
                results[worker] = out
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    for worker, events in streams.items():
        alone = make_store(f"-alone-{worker}").update_batch(events)
        got = [c.features[: c.features._fields.index("cp_count_24h")] for c in results[worker]]
        want = [c.features[: c.features._fields.index("cp_count_24h")] for c in alone]
        assert got == want
    # every event reached its merchant: a probe at the end sees them all
    probe_store = make_store()
    for m in range(3):
        (probe,) = probe_store.update_batch(
            [make_event(per_worker * 0.2 + 1, customer="probe", counterparty=f"mer-{m}")]
        )
        assert probe.features.cp_count_7d == 2 * per_worker // 3 + 1
        assert probe.features.cp_customers_7d == 2 * 7 + 1


def test_a_replay_in_a_fresh_namespace_yields_identical_narratives(make_event, make_store):
    events = [
        make_event(
            i * 13.0,
            customer=f"cus-{i % 5}",
            counterparty=f"acc-{i % 9}",
            counterparty_type=CounterpartyType.ACCOUNT,
            channel=Channel.WIRE if i % 2 else Channel.P2P,
            direction=Direction.OUTBOUND if i % 3 else Direction.INBOUND,
            amount_usd=50 + (i * 37) % 900,
        )
        for i in range(200)
    ]
    spec = default_spec()
    live_store, replay_store = make_store(), make_store("-replay")
    live = [c for s in range(0, 200, 64) for c in live_store.update_batch(events[s : s + 64])]
    replay = replay_store.update_batch(events)
    live_text = [
        build_narrative(e, c.features, spec, c.story) for e, c in zip(events, live, strict=True)
    ]
    replay_text = [
        build_narrative(e, c.features, spec, c.story) for e, c in zip(events, replay, strict=True)
    ]
    assert live_text == replay_text
    assert len({n.text for n in live_text}) > 20  # the narratives do vary


def _fraud_label(event, label_minutes_after: float, suspicious: bool = True) -> LabelEvent:  # type: ignore[no-untyped-def]
    return LabelEvent(
        label_id=f"lab-{event.event_id}-{int(suspicious)}",
        event_id=event.event_id,
        customer_id=event.customer_id,
        event_time=event.event_time,
        label_time=event.event_time + timedelta(minutes=label_minutes_after),
        source=LabelSource.CHARGEBACK,
        is_suspicious=suspicious,
        typology=Typology.COMPROMISED_TERMINAL if suspicious else Typology.LEGITIMATE,
        counterparty_id=event.counterparty_id,
        terminal_id=event.terminal_id,
    )


def test_label_risk_uses_only_labels_known_at_the_event_time(make_event, make_store) -> None:
    early = [
        make_event(i * 10, customer=f"cus-{i}", terminal="trm-9", counterparty="mer-9")
        for i in range(6)
    ]
    later = [
        make_event(
            60 * 24 * 3 + i * 10, customer=f"cus-{i}", terminal="trm-9", counterparty="mer-9"
        )
        for i in range(3)
    ]
    labels = [_fraud_label(early[0], 60 * 24 * 2), _fraud_label(early[1], 60 * 24 * 2)]
    legit = _fraud_label(early[2], 60, suspicious=False)

    live = make_store()
    seen_live = live.update_batch(early)
    result = live.apply_labels([*labels, legit])
    assert (result.applied, result.duplicates, result.skipped) == (2, 0, 1)
    assert live.apply_labels(labels).duplicates == 2  # idempotent
    seen_live += live.update_batch(later)

    # a replay that learns every label before any event must compute the same context
    replay = make_store("-labels-first")
    replay.apply_labels([*labels, legit])
    seen_replay = replay.update_batch(early + later)

    for seen in (seen_live, seen_replay):
        f = [c.features for c in seen]
        # the terminal is the counterparty entity of these card payments
        assert [x.has_terminal for x in f] == [1] * 9
        assert [x.cp_fraud_labels_30d for x in f] == [0] * 6 + [2] * 3
        assert f[-1].cp_fraud_rate_30d == pytest.approx(2 / 9)
    # Counterparty risk is arrival-order independent; the cards' exposure is not, by design:
    # a point's customers are marked when the labels confirming it arrive, so a replay that
    # hands every label over first has nobody to mark (docs/context.md).
    exposure = ("compromised_points", "days_since_compromised_visit")

    def without_exposure(seen):  # type: ignore[no-untyped-def]
        return [{k: v for k, v in c.features._asdict().items() if k not in exposure} for c in seen]

    assert without_exposure(seen_live) == without_exposure(seen_replay)
    assert [c.features.compromised_points for c in seen_live] == [0] * 6 + [1] * 3
    assert [c.features.compromised_points for c in seen_replay] == [0] * 9


def test_every_key_has_a_ttl_and_sizes_stay_bounded(make_event, make_store, redis_client) -> None:
    limits = ContextLimits(log_cap=8, seen_cap=10, device_cap=4, set_cap=16, dedupe_cap=8)
    store = make_store("-small", limits=limits)
    events = [
        make_event(
            i * 0.5,
            customer="busy",
            counterparty=f"acc-{i}",
            counterparty_type=CounterpartyType.ACCOUNT,
            channel=Channel.P2P,
            direction=Direction.INBOUND if i % 2 else Direction.OUTBOUND,
            device=f"dev-{i}",
        )
        for i in range(200)
    ]
    contexts = [c for s in range(0, 200, 16) for c in store.update_batch(events[s : s + 16])]
    assert contexts[-1].features.out_count_1h <= 8  # windows cover the log, capped at 8 records
    ns = store.namespace
    base = keys.customer_base(ns, "busy")
    assert redis_client.hlen(base + ":k") <= 10 + 4 + 1 + 2  # counterparties, devices, country
    assert redis_client.zcard(base + ":z") <= 16
    blob = redis_client.get(base + ":s")
    assert blob is not None
    # header, 8 log records, 16 recent outbound transfers, the story, 8 dedupe snapshots
    story = 1 + 16 * 13
    assert len(blob) <= 44 * 8 + 8 * 36 + 16 * 20 + 16 * 13 + 8 * (16 + 41 * 4 + story)
    all_keys = list(redis_client.scan_iter(match=keys.namespace_pattern(ns), count=1000))
    assert all_keys
    assert all(redis_client.pttl(k) > 0 for k in all_keys)


def test_one_round_trip_per_batch_whatever_its_size(make_event, redis_url, redis_namespace):
    sends = []

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sends.append(1)
            super().send_packed_command(command, check_health)

    from stream.context.store import ContextStore
    from stream.settings import ContextSettings

    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client: redis.Redis[bytes] = redis.Redis(connection_pool=pool)
    with (
        client,
        ContextStore(
            client, ContextSettings(namespace=redis_namespace), create_namespace=True
        ) as store,
    ):
        for size in (1, 64, 256):
            before = len(sends)
            store.update_batch(
                [
                    make_event(i, customer=f"c-{size}-{i}", counterparty=f"m-{i}", terminal="t")
                    for i in range(size)
                ]
            )
            assert len(sends) - before == 1, f"batch of {size}"
        # the Lua work is one call per script, not one per event
        client.config_resetstat()
        store.update_batch([make_event(i, customer=f"x-{i}") for i in range(256)])
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] == 2
    pool.disconnect()


def test_namespaces_never_share_state(make_event, make_store) -> None:
    a, b = make_store(), make_store("-b")
    a.update_batch([make_event(0), make_event(1)])
    (first_in_b,) = b.update_batch([make_event(2)])
    assert first_in_b.features.out_count_1h == 1
    assert first_in_b.features.seconds_since_previous == -1
    assert b.drop_namespace() > 0


def test_calls_split_into_chunks_compute_the_same(make_event, make_store) -> None:
    events = [
        make_event(i * 2.0, customer=f"cus-{i % 4}", counterparty=f"mer-{i % 3}")
        for i in range(100)
    ]
    whole = make_store().update_batch(events)
    chunked = make_store("-chunked", limits=ContextLimits(ops_per_call=16)).update_batch(events)
    assert [c.features for c in chunked] == [c.features for c in whole]


def test_pipelined_submissions_keep_their_order(make_event, make_store) -> None:
    store = make_store()
    batches = [[make_event(k * 10 + i, customer="cus-p") for i in range(5)] for k in range(4)]
    pending = [store.submit_batch(b) for b in batches]  # all in flight at once
    counts = [c.features.out_count_24h for p in pending for c in p.result()]
    assert counts == list(range(1, 21))


def test_a_failed_submission_keeps_later_ones_from_overtaking_its_retry(
    make_event, make_store, redis_client
) -> None:
    # The scorer begins batch k+1 before it learns whether batch k was applied (its prefetch):
    # when k fails, k+1 must not reach Redis before k is retried.
    store = make_store()
    ns = store.namespace
    store.update_batch([make_event(0, customer="cus-bad")])
    bad = keys.customer_base(ns, "cus-bad") + ":s"
    redis_client.setrange(bad, 0, struct.pack("<d", 1))  # a blob of an older layout: refused
    failing = store.submit_batch([make_event(10, customer="cus-bad")])
    following = store.submit_batch([make_event(11, customer="cus-next")])
    with pytest.raises(ContextLayoutMismatch):
        failing.result()
    with pytest.raises(ContextUnavailable, match="not applied"):
        following.result()
    assert redis_client.keys(keys.customer_base(ns, "cus-next") + "*") == []
    # the failure was seen: what is submitted now is applied, as the first of its customer
    again = store.submit_batch([make_event(11, customer="cus-next")]).result()
    assert [c.features.out_count_24h for c in again] == [1]
    assert [c.duplicate for c in again] == [False]
