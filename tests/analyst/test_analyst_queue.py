"""The simulated analyst's holding queue: release in event time, commit only what was sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import LabelEvent, LabelSource, Typology
from stream.analyst.queue import DispositionQueue

T0 = datetime(2026, 3, 1, tzinfo=UTC)
P0, P1 = ("risk.alerts", 0), ("risk.alerts", 1)


def disposition(event_id: str, at: datetime, delay: timedelta = timedelta(hours=4)) -> LabelEvent:
    return LabelEvent(
        label_id=f"an-{event_id}",
        event_id=event_id,
        customer_id="c1",
        event_time=at,
        label_time=at + delay,
        source=LabelSource.ANALYST,
        is_suspicious=False,
        typology=Typology.LEGITIMATE,
    )


def test_a_disposition_waits_until_the_alert_stream_passes_its_review_time() -> None:
    queue = DispositionQueue()
    queue.seen(P0, 10, T0)
    queue.hold(disposition("e1", T0), P0, 10)
    assert queue.due() == []
    queue.seen(P1, 3, T0 + timedelta(hours=3, minutes=59))
    assert queue.due() == []
    queue.seen(P1, 4, T0 + timedelta(hours=4))
    assert [label.event_id for label in queue.due()] == ["e1"]
    assert queue.clock == T0 + timedelta(hours=4)


def test_dispositions_leave_in_review_time_order_and_all_of_them_when_asked() -> None:
    queue = DispositionQueue()
    for offset, (event_id, minutes) in enumerate([("late", 50), ("early", 5), ("mid", 20)]):
        at = T0 + timedelta(minutes=minutes)
        queue.seen(P0, offset, at)
        queue.hold(disposition(event_id, at), P0, offset)
    assert [label.event_id for label in queue.due(everything=True)] == ["early", "mid", "late"]
    assert len(queue) == 0


def test_an_alert_commits_only_once_its_disposition_was_delivered() -> None:
    queue = DispositionQueue()
    queue.seen(P0, 5, T0)
    queue.hold(disposition("e5", T0), P0, 5)
    queue.seen(P0, 6, T0 + timedelta(minutes=1))  # no disposition (e.g. not in the truth)
    queue.seen(P1, 0, T0 + timedelta(hours=5))
    assert dict(queue.committable()) == {P0: 5, P1: 1}
    released = queue.due()
    assert [label.event_id for label in released] == ["e5"]
    assert dict(queue.committable()) == {P0: 5, P1: 1}  # released, not yet delivered
    queue.done()
    assert dict(queue.committable()) == {P0: 7, P1: 1}


def test_revoked_partitions_drop_what_is_held_of_them() -> None:
    queue = DispositionQueue()
    queue.seen(P0, 0, T0)
    queue.hold(disposition("a", T0), P0, 0)
    queue.seen(P1, 0, T0)
    queue.hold(disposition("b", T0), P1, 0)
    dropped = queue.forget({P0})
    assert [label.event_id for label in dropped] == ["a"]
    assert [label.event_id for label in queue.due(everything=True)] == ["b"]
    assert dict(queue.committable()) == {P1: 0}
