"""Bounded inputs of a replay: a file (JSONL or Parquet) or a range of a Kafka topic.

A source yields :class:`SourceRecord` values in a deterministic order; the replay loop turns
them into :class:`~stream.pipeline.messages.Incoming` messages (stamping ``received_at`` when a
batch is released) and hands batches to the live scorer's ``BatchProcessor``. Nothing here
imports the scorer (and with it torch): reports and label readers use these readers too.

* File: every line (JSONL) or row (Parquet) is one message of topic ``file:<name>``, partition
  0, offset = its 1-based line / row number (so a dead letter's source points at the line an
  editor shows). Order is the file's order. Parquet rows are rendered as the JSON a producer
  would have sent (null columns left out, timestamps as RFC 3339 in UTC); nothing is validated
  here, so bad rows become dead letters exactly as bad messages do in the live scorer.
* Topic: each partition is read from a start offset to an end offset captured when the source
  is opened (later appends, and transactions still open then, are not part of the run: a
  read_committed consumer's high watermark is the last stable offset). Partitions are merged by
  (event time parsed from the value, else the broker timestamp; partition; offset) with a
  k-way merge over per-partition buffers: an event is released only when every partition still
  being read has a buffered head, so the order is a function of the data alone - never of how
  fetches happened to interleave - while each partition's own order is kept, as in live.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas.common import format_utc
from stream.kafka.clients import consumer_config
from stream.replay.errors import SourceError
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
JSONL_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES: Final = (".parquet",)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def event_time_ms(value: bytes | None) -> int | None:
    """The ``event_time`` of a TransactionEvent's JSON, or None when it cannot be read (the
    message is then a dead letter; its position in the merge falls back to broker time)."""
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    raw = data.get("event_time") if isinstance(data, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.upper())  # RFC 3339 allows a lower-case t and z
        if moment.tzinfo is None:
            return None
        # Representable in UTC (9999-12-31T23:00-05:00 is not): every reader of the result,
        # from_ms included, can then work with it; the decoder judges the rest.
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return to_ms(moment)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One input message before the replay releases it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None
    """Broker timestamp (topics); None for files."""
    event_time_ms: int | None
    """Parsed from the value; None when unreadable."""

    @property
    def order_key(self) -> tuple[int, int, int]:
        when = self.event_time_ms if self.event_time_ms is not None else self.timestamp_ms
        return (when if when is not None else -1, self.partition, self.offset)

    @property
    def source(self) -> str:
        """``topic[partition]@offset``, as the scorer names where a message came from."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


class ReplaySource(Protocol):
    @property
    def total(self) -> int | None:
        """Messages the source will yield at most (for the progress bar), if known."""

    def describe(self) -> dict[str, Any]:
        """What was read, for the run manifest."""

    def records(self) -> Iterator[SourceRecord]: ...

    def close(self) -> None: ...


# -- files ------------------------------------------------------------------------------------


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        # a timestamp column without a zone holds UTC, as the simulator writes it
        return format_utc(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    return value


def parquet_row_json(row: Mapping[str, object]) -> bytes:
    """A Parquet row as the JSON message a producer would have sent."""
    return orjson.dumps({k: _json_value(v) for k, v in row.items() if v is not None})


class FileSource:
    """A JSONL or Parquet file, optionally cut to an event-time range ``[start, end)``.

    With a range, lines whose event time cannot be read are kept (they become dead letters,
    so the run's dead-letter count shows them) - there is no other time to judge them by."""

    def __init__(
        self, path: Path, *, start: datetime | None = None, end: datetime | None = None
    ) -> None:
        if not path.is_file():
            raise SourceError(f"{path} is not a file")
        suffix = path.suffix.lower()
        if suffix not in (*JSONL_SUFFIXES, *PARQUET_SUFFIXES):
            raise SourceError(f"{path}: expected a .jsonl or .parquet file, got {suffix!r}")
        if start is not None and end is not None and end <= start:
            raise SourceError("the event-time range is empty: --to-time must be after --from-time")
        self.path = path
        self.format = "parquet" if suffix in PARQUET_SUFFIXES else "jsonl"
        self.topic = f"file:{path.name}"
        self._start_ms = to_ms(start) if start else None
        self._end_ms = to_ms(end) if end else None
        self._total: int | None = None

    @property
    def total(self) -> int:
        if self._total is None:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                self._total = int(pq.ParquetFile(self.path).metadata.num_rows)
            else:
                with self.path.open("rb") as file:
                    self._total = sum(1 for line in file if line.strip())
        return self._total

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "file",
            "path": str(self.path.resolve()),
            "format": self.format,
            "topic": self.topic,
            "from_time": from_ms(self._start_ms).isoformat() if self._start_ms else None,
            "to_time": from_ms(self._end_ms).isoformat() if self._end_ms else None,
        }

    def _values(self) -> Iterator[tuple[int, bytes]]:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            number = 0
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    number += 1
                    yield number, parquet_row_json(row)
            return
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                stripped = line.strip()
                if stripped:
                    yield number, stripped

    def _in_range(self, when: int | None) -> bool:
        if when is None:
            return True
        if self._start_ms is not None and when < self._start_ms:
            return False
        return self._end_ms is None or when < self._end_ms

    def records(self) -> Iterator[SourceRecord]:
        for number, value in self._values():
            when = event_time_ms(value)
            if self._in_range(when):
                yield SourceRecord(self.topic, 0, number, None, value, (), None, when)

    def close(self) -> None:
        """Nothing stays open between reads."""


# -- topics -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionRange:
    partition: int
    start: int
    end: int
    """Exclusive."""

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class OffsetBound:
    """Offsets asked for on the command line: one for every partition and/or per partition."""

    default: int | None = None
    per_partition: dict[int, int] = field(default_factory=dict)

    def for_partition(self, partition: int) -> int | None:
        return self.per_partition.get(partition, self.default)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> OffsetBound:
        """``["100"]`` (every partition) and/or ``["0:100", "2:50"]`` (per partition)."""
        default: int | None = None
        per_partition: dict[int, int] = {}
        for spec in specs:
            partition, sep, offset = spec.partition(":")
            try:
                if sep:
                    per_partition[int(partition)] = int(offset)
                else:
                    default = int(spec)
            except ValueError:
                raise SourceError(
                    f"not an offset: {spec!r} (use OFFSET or PARTITION:OFFSET)"
                ) from None
        if any(o < 0 for o in [*per_partition.values(), default or 0]):
            raise SourceError("offsets must not be negative")
        return cls(default, per_partition)


Bound = OffsetBound | datetime | None


def clamp_ranges(
    watermarks: Mapping[int, tuple[int, int]],
    starts: Mapping[int, int | None],
    ends: Mapping[int, int | None],
) -> list[PartitionRange]:
    """Per-partition ``[start, end)`` within what the broker still holds: a start before the
    low watermark (deleted by retention) begins at it; no end means the high watermark."""
    ranges = []
    for partition in sorted(watermarks):
        low, high = watermarks[partition]
        start = starts.get(partition)
        end = ends.get(partition)
        start = low if start is None else min(max(start, low), high)
        end = high if end is None else min(max(end, low), high)
        ranges.append(PartitionRange(partition, start, max(start, end)))
    return ranges


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def message_record(message: Message) -> SourceRecord:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:  # only producer-side messages
        raise SourceError("consumed a message without topic/partition/offset")
    ts_type, ts = message.timestamp()
    headers = message.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    value = _as_bytes(message.value())
    return SourceRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=_as_bytes(message.key()),
        value=value,
        headers=tuple((name, _as_bytes(v) or b"") for name, v in items),
        timestamp_ms=ts if ts_type != 0 else None,  # 0: TIMESTAMP_NOT_AVAILABLE
        event_time_ms=event_time_ms(value),
    )


class TopicSource:
    """A range of a topic, read without committing (the replay's own consumer group id is
    used only to identify it to the broker), merged across partitions deterministically."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        group_id: str,
        start: Bound = None,
        end: Bound = None,
        partitions: Sequence[int] | None = None,
        max_buffered: int = 5_000,
        stall_timeout_s: float = 60.0,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self._start, self._end = start, end
        self._max_buffered = max_buffered
        self._stall_timeout_s = stall_timeout_s
        self._consumer = Consumer(
            consumer_config(
                kafka,
                group_id,
                overrides={"enable.partition.eof": True, **(consumer_overrides or {})},
            )
        )
        try:
            self.ranges = self._resolve(partitions)
        except BaseException:
            self._consumer.close()
            raise

    # -- ranges, captured once ---------------------------------------------------------------

    def _resolve(self, only: Sequence[int] | None) -> list[PartitionRange]:
        metadata = self._consumer.list_topics(self.topic, timeout=30)
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None:
            raise SourceError(f"topic {self.topic!r} does not exist")
        partitions = sorted(info.partitions)
        if only:
            unknown = sorted(set(only) - set(partitions))
            if unknown:
                raise SourceError(f"topic {self.topic!r} has no partition {unknown}")
            partitions = sorted(set(only))
        watermarks = {
            p: self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=30, cached=False
            )
            for p in partitions
        }
        return clamp_ranges(
            watermarks,
            self._offsets(self._start, watermarks),
            self._offsets(self._end, watermarks),
        )

    def _offsets(
        self, bound: Bound, watermarks: Mapping[int, tuple[int, int]]
    ) -> dict[int, int | None]:
        if bound is None:
            return dict.fromkeys(watermarks)
        if isinstance(bound, OffsetBound):
            return {p: bound.for_partition(p) for p in watermarks}
        wanted = [TopicPartition(self.topic, p, to_ms(bound)) for p in watermarks]
        found = self._consumer.offsets_for_times(wanted, timeout=30)
        # -1: nothing at or after that time in the partition, so the time falls at its end -
        # for a start as for an end (None would mean "not given": the low mark for a start)
        return {
            tp.partition: tp.offset if tp.offset >= 0 else watermarks[tp.partition][1]
            for tp in found
        }

    @property
    def total(self) -> int:
        return sum(r.size for r in self.ranges)

    def describe(self) -> dict[str, Any]:
        def bound(value: Bound) -> Any:
            if isinstance(value, datetime):
                return value.astimezone(UTC).isoformat()
            if isinstance(value, OffsetBound):
                return {"default": value.default, "per_partition": value.per_partition}
            return None

        return {
            "kind": "topic",
            "topic": self.topic,
            "from": bound(self._start),
            "to": bound(self._end),
            "partitions": [
                {"partition": r.partition, "start": r.start, "end": r.end} for r in self.ranges
            ],
        }

    # -- reading ----------------------------------------------------------------------------

    def records(self) -> Iterator[SourceRecord]:
        active = {r.partition: r for r in self.ranges if r.size > 0}
        if not active:
            return
        buffers: dict[int, deque[SourceRecord]] = {p: deque() for p in active}
        reading = set(active)
        paused: set[int] = set()
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, p, r.start) for p, r in active.items()])

        def pause(partition: int) -> None:
            if partition not in paused:
                consumer.pause([TopicPartition(self.topic, partition)])
                paused.add(partition)

        def finish(partition: int) -> None:
            reading.discard(partition)
            pause(partition)

        last_message = time.monotonic()
        while reading or any(buffers.values()):
            # Release while every partition still being read has a head to compare.
            while any(buffers.values()) and all(buffers[p] for p in reading):
                head = min((b[0] for b in buffers.values() if b), key=lambda r: r.order_key)
                owner = head.partition
                buffers[owner].popleft()
                if (
                    owner in paused
                    and owner in reading
                    and len(buffers[owner]) < self._max_buffered // 2
                ):
                    consumer.resume([TopicPartition(self.topic, owner)])
                    paused.discard(owner)
                yield head
            if not reading:
                continue
            for message in consumer.consume(500, timeout=0.5):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # at the high watermark, which is at or past the captured end
                        if partition in reading:
                            finish(partition)
                    elif error.fatal():
                        raise SourceError(f"consumer error on {self.topic}: {error.str()}")
                    else:
                        log.warning("consumer: %s", error.str())
                    continue
                last_message = time.monotonic()
                assert partition is not None
                offset = message.offset() or 0
                if partition not in reading:
                    continue
                if offset >= active[partition].end:
                    finish(partition)
                    continue
                buffers[partition].append(message_record(message))
                if offset >= active[partition].end - 1:
                    finish(partition)
                elif len(buffers[partition]) >= self._max_buffered:
                    pause(partition)
            if reading and time.monotonic() - last_message > self._stall_timeout_s:
                positions = {p: buffers[p][-1].offset if buffers[p] else None for p in reading}
                raise SourceError(
                    f"{self.topic}: partitions {sorted(reading)} delivered nothing for "
                    f"{self._stall_timeout_s:.0f}s before their end offsets (last buffered: "
                    f"{positions}); is the broker away?"
                )

    def close(self) -> None:
        self._consumer.close()
