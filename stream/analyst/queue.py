"""Dispositions held until their review time has come, and the offsets that are safe to commit.

Pure: no Kafka, no clock of its own. The review delay is in **event time**, like every other
label riskstream sees: an alert on an event at ``t`` gets its disposition with
``label_time = t + delay``, and the worker releases it only once the alert stream's own clock
(the newest alerted event time seen) has passed ``label_time``, the way the simulator releases
chargebacks when its traffic passes theirs. Simulated traffic runs much faster than the wall
clock, so a wall-clock delay would mean nothing to the trainer, whose clock is the labels'
event time. When alerts stop coming (the traffic ended), the worker releases what is left.

At-least-once: an alert's offset is committable only once its disposition was delivered, so a
partition's committable offset is the smallest offset still held there (or the one after the
last seen). A crash re-reads the held alerts, and their dispositions get the same label ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from schemas import LabelEvent

Partition = tuple[str, int]


@dataclass(order=True)
class _Held:
    label_time: datetime
    seq: int
    label: LabelEvent = field(compare=False)
    partition: Partition = field(compare=False)
    offset: int = field(compare=False)


class DispositionQueue:
    def __init__(self) -> None:
        self._heap: list[_Held] = []
        self._seq = 0
        self._clock: datetime | None = None
        self._held_offsets: dict[Partition, set[int]] = {}
        self._next_offset: dict[Partition, int] = {}
        self._released: list[_Held] = []

    @property
    def clock(self) -> datetime | None:
        """The newest alerted event time seen: the alert stream's event-time clock."""
        return self._clock

    def __len__(self) -> int:
        return len(self._heap)

    def seen(self, partition: Partition, offset: int, event_time: datetime) -> None:
        """An alert was read (whether or not it gets a disposition): it moves the clock and,
        once nothing before it is held, the partition's committable offset."""
        if self._clock is None or event_time > self._clock:
            self._clock = event_time
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), offset + 1)

    def hold(self, label: LabelEvent, partition: Partition, offset: int) -> None:
        heapq.heappush(self._heap, _Held(label.label_time, self._seq, label, partition, offset))
        self._seq += 1
        self._held_offsets.setdefault(partition, set()).add(offset)

    def due(self, *, everything: bool = False) -> list[LabelEvent]:
        """Pop the dispositions whose review time the clock has passed (all of them when
        ``everything``), in label-time order. They stay counted as held until :meth:`done`."""
        out: list[_Held] = []
        while self._heap and (
            everything or (self._clock is not None and self._heap[0].label_time <= self._clock)
        ):
            out.append(heapq.heappop(self._heap))
        self._released = out
        return [h.label for h in out]

    def done(self) -> None:
        """The dispositions of the last :meth:`due` were delivered: their alerts may commit."""
        for held in self._released:
            self._held_offsets[held.partition].discard(held.offset)
        self._released = []

    def committable(self) -> Iterator[tuple[Partition, int]]:
        """(partition, offset to commit) for every partition seen."""
        for partition, after_last in self._next_offset.items():
            held = self._held_offsets.get(partition)
            yield partition, min(held) if held else after_last

    def forget(self, partitions: set[Partition]) -> list[LabelEvent]:
        """Revoked partitions: drop what is held of them (the new owner reads it again);
        returns the dropped dispositions."""
        dropped = [h.label for h in self._heap if h.partition in partitions]
        self._heap = [h for h in self._heap if h.partition not in partitions]
        heapq.heapify(self._heap)
        for partition in partitions:
            self._held_offsets.pop(partition, None)
            self._next_offset.pop(partition, None)
        return dropped
