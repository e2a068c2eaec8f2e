"""The label-reveal clock: when a label reaches the context, in replays and dataset building.

A label (chargeback, confirmed case, analyst disposition) became known at its ``label_time``;
a replay may add a ``reveal_delay`` on top ("what if they came a week later?"). Both the
replay (``stream.replay``) and the dataset builder (``stream.datasets``) feed events and labels
to one ``ContextStore`` in event order, and both use this clock, so a model is trained on the
very contexts a replay of its data computes.

**The rule: a label is applied right before the first event whose time reaches its reveal
time**, with the clock the newest event time seen so far (so an out-of-order event never moves
it back). Every event before that one was applied before the label, every event after it
sees the label. Batches are therefore cut at reveal times (``RevealClock.take``): a batch
never has a label revealed inside it. That makes the contexts independent of the batch size -
which applying a batch's labels all before it (or all after it) is not:

* the label's own facts (``labels.lua``) are safe either way - the store counts a label for an
  event only if the label's time is at or before the event's;
* but a label that confirms a compromised point marks the customers who paid there before it
  (``exposure.lua``), found from the payments already applied. Applied before a batch, it
  misses that batch's earlier payments; applied after, the batch's later events miss the
  label. Measured before this rule: 1,074 of 7,267 events' contexts differed between two
  batch sizes.

Only labels the store records (``changes_context``: suspicious, naming a counterparty or a
terminal) cut a batch; the others are handed out all the same, and change nothing. The price
is smaller batches where such labels fall (a replay's model calls then score fewer
narratives at a time); batches are never split inside the store instead, because a store call
is what a retry repeats and one entity's ops of a batch never go into two calls
(``common.lua``, the dedupe memory).

Each label is handed out with its ``label_time`` moved to its reveal time: with a delay, the
store must count it from when the run says it arrived, not from when it was first known.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from schemas import LabelEvent


def changes_context(label: LabelEvent) -> bool:
    """Whether the context store records ``label`` (``ContextStore.apply_labels``): a fraud
    label naming the counterparty or terminal it is held against."""
    return label.is_suspicious and (
        label.counterparty_id is not None or label.terminal_id is not None
    )


class LabelSchedule:
    """Labels ordered by reveal time; :meth:`due` hands out each one once."""

    def __init__(self, labels: Iterable[LabelEvent], reveal_delay: timedelta) -> None:
        if reveal_delay < timedelta(0):
            raise ValueError("the label reveal delay must not be negative")
        self.reveal_delay = reveal_delay
        unique: dict[str, LabelEvent] = {}
        for label in labels:
            # one label id, one label: the earliest-known copy (a topic may hold repeats)
            known = unique.get(label.label_id)
            if known is None or label.label_time < known.label_time:
                unique[label.label_id] = label
        self._pending = sorted(unique.values(), key=lambda lb: (lb.label_time, lb.label_id))
        self._reveal_ms = [_epoch_ms(self.reveal_time(lb)) for lb in self._pending]
        self._cut_ms = [
            t for t, lb in zip(self._reveal_ms, self._pending, strict=True) if changes_context(lb)
        ]
        self._next = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def revealed(self) -> int:
        return self._next

    def reveal_time(self, label: LabelEvent) -> datetime:
        return label.label_time + self.reveal_delay

    def next_cut_ms(self, clock_ms: int | None) -> int | None:
        """The first reveal time after ``clock_ms`` of a label that changes the context
        (epoch ms), or None: where a batch must end."""
        if clock_ms is None:
            return self._cut_ms[0] if self._cut_ms else None
        at = bisect_right(self._cut_ms, clock_ms)
        return self._cut_ms[at] if at < len(self._cut_ms) else None

    def due(self, clock: datetime) -> list[LabelEvent]:
        """Labels revealed at or before ``clock`` and not handed out yet, each with its
        ``label_time`` set to its reveal time."""
        return self.due_ms(_epoch_ms(clock))

    def due_ms(self, clock_ms: int) -> list[LabelEvent]:
        start = self._next
        while self._next < len(self._pending) and self._reveal_ms[self._next] <= clock_ms:
            self._next += 1
        return [
            label.model_copy(update={"label_time": self.reveal_time(label)})
            for label in self._pending[start : self._next]
        ]


class RevealClock:
    """The event-time clock of one run over a schedule (None: a run without labels)."""

    def __init__(self, schedule: LabelSchedule | None) -> None:
        self.schedule = schedule
        self.clock_ms: int | None = None
        """The newest event time taken so far (None before the first timed event)."""

    def take(self, times_ms: Sequence[int | None]) -> tuple[int, list[LabelEvent]]:
        """How many of the next records (``times_ms``: their event times, None for one that
        must not move the clock) form the next batch, and the labels to apply before it:
        those its first record's time reveals. The batch ends before the first later record
        that would reveal a label changing the context. At least one record, if any."""
        if not times_ms:
            return 0, []
        schedule = self.schedule
        clock = self._advanced(self.clock_ms, times_ms[0])
        due = schedule.due_ms(clock) if schedule is not None and clock is not None else []
        upcoming = schedule.next_cut_ms(clock) if schedule is not None else None
        taken = 1
        for when in times_ms[1:]:
            after = self._advanced(clock, when)
            if upcoming is not None and after is not None and after >= upcoming:
                break
            clock = after
            taken += 1
        self.clock_ms = clock
        return taken, due

    @staticmethod
    def _advanced(clock: int | None, when: int | None) -> int | None:
        if when is None:
            return clock
        return when if clock is None else max(clock, when)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _epoch_ms(moment: datetime) -> int:
    """Exact whole milliseconds (labels and event times are timezone-aware UTC)."""
    return (moment - _EPOCH) // _ONE_MS
