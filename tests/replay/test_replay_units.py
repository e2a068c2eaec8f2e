"""Replay's pure parts: batching, pacing, the label schedule, file sources, ranges, run ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from schemas import LabelEvent, LabelSource, TransactionEvent, Typology, decode
from stream.cli import app
from stream.context.reveal import LabelSchedule, RevealClock
from stream.replay.driving import ReleasedBatches
from stream.replay.errors import ReplayError, SourceError
from stream.replay.manifest import check_run_id
from stream.replay.run import Pacer, batches, namespace_for, new_run_id, output_topic_for
from stream.replay.sources import (
    FileSource,
    OffsetBound,
    SourceRecord,
    clamp_ranges,
    event_time_ms,
    to_ms,
)
from stream.scorer.core import EventWindow
from stream.settings import ContextSettings

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def record(
    offset: int, when: datetime | None, partition: int = 0, ts: int | None = None
) -> SourceRecord:
    return SourceRecord("t", partition, offset, None, b"{}", (), ts, to_ms(when) if when else None)


def label(label_id: str, known: datetime, suspicious: bool = True) -> LabelEvent:
    return LabelEvent(
        label_id=label_id,
        event_id=f"ev-{label_id}",
        customer_id="cus-1",
        event_time=known - timedelta(days=3),
        label_time=known,
        source=LabelSource.CHARGEBACK,
        is_suspicious=suspicious,
        typology=Typology.STOLEN_CARD if suspicious else Typology.LEGITIMATE,
        counterparty_id="mer-1",
    )


# -- batching and pacing ----------------------------------------------------------------------


def test_batches_are_cut_by_size_alone_without_pacing() -> None:
    records = [record(i, T0 + timedelta(hours=i)) for i in range(10)]
    sizes = [len(b) for b in batches(records, 4)]
    assert sizes == [4, 4, 2]
    assert [r.offset for b in batches(records, 4) for r in b] == list(range(10))


def test_paced_batches_also_end_at_an_event_time_gap() -> None:
    # events at minutes 0, 1, 2, 10, 11 with a 5-minute span: the gap before minute 10 cuts
    minutes = [0, 1, 2, 10, 11]
    records = [record(i, T0 + timedelta(minutes=m)) for i, m in enumerate(minutes)]
    cut = [[r.offset for r in b] for b in batches(records, 100, max_span_ms=5 * 60_000)]
    assert cut == [[0, 1, 2], [3, 4]]
    # unreadable event times never cut a batch
    records.insert(3, record(99, None))
    cut = [[r.offset for r in b] for b in batches(records, 100, max_span_ms=5 * 60_000)]
    assert cut == [[0, 1, 2, 99], [3, 4]]


def test_pacer_maps_event_time_to_wall_time_at_the_given_speed() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(60.0, clock=lambda: now[0], sleep=sleep)
    start = to_ms(T0)
    assert pacer.wait_for(start) == 0.0  # the first batch sets the origin
    assert pacer.wait_for(start + 60_000) == pytest.approx(1.0)  # a minute at 60x: 1 s
    now[0] += 5.0  # processing fell behind schedule...
    assert pacer.wait_for(start + 120_000) == 0.0  # ...so no wait
    assert slept == [pytest.approx(1.0)]
    assert Pacer(None).wait_for(start + 10**9) == 0.0
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


# -- labels -----------------------------------------------------------------------------------


def test_labels_are_revealed_only_once_their_time_plus_the_delay_has_passed() -> None:
    delay = timedelta(hours=6)
    schedule = LabelSchedule([label("b", T0 + timedelta(hours=1)), label("a", T0)], delay)
    assert schedule.due(T0 + timedelta(hours=5, minutes=59)) == []
    first = schedule.due(T0 + timedelta(hours=6))
    assert [lb.label_id for lb in first] == ["a"]
    # revealed with its label_time moved to the reveal time: the context store counts it
    # for events from then on, not from when it was originally known
    assert first[0].label_time == T0 + delay
    assert schedule.due(T0 + timedelta(hours=6, minutes=30)) == []
    assert [lb.label_id for lb in schedule.due(T0 + timedelta(days=9))] == ["b"]
    assert schedule.due(T0 + timedelta(days=99)) == []  # each label once
    assert schedule.revealed == len(schedule) == 2


def test_a_repeated_label_id_counts_once_from_its_earliest_copy() -> None:
    schedule = LabelSchedule([label("x", T0 + timedelta(days=2)), label("x", T0)], timedelta(0))
    assert len(schedule) == 1
    assert [lb.label_time for lb in schedule.due(T0)] == [T0]
    with pytest.raises(ValueError, match="negative"):
        LabelSchedule([], timedelta(seconds=-1))


def test_the_clock_cuts_a_batch_where_a_label_that_changes_the_context_is_revealed() -> None:
    hour = timedelta(hours=1)
    clock = RevealClock(
        LabelSchedule(
            [
                label("known", T0),
                label("later", T0 + 2 * hour),
                label("legit", T0 + 3 * hour, suspicious=False),  # changes nothing: no cut
                label("last", T0 + 5 * hour),
            ],
            timedelta(0),
        )
    )
    times = [to_ms(T0 + k * hour) for k in range(7)]  # one event an hour from T0
    taken, due = clock.take(times)
    # the first event (at T0) sees "known"; the batch ends before the event at T0 + 2h
    assert (taken, [lb.label_id for lb in due]) == (2, ["known"])
    taken, due = clock.take(times[2:])
    assert (taken, [lb.label_id for lb in due]) == (3, ["later"])  # through T0 + 4h
    taken, due = clock.take(times[5:])
    assert (taken, [lb.label_id for lb in due]) == (2, ["legit", "last"])
    assert clock.take([]) == (0, [])


def test_the_clock_never_runs_back_and_ignores_untimed_records() -> None:
    clock = RevealClock(LabelSchedule([label("a", T0 + timedelta(hours=2))], timedelta(0)))
    late = to_ms(T0 - timedelta(days=1))
    taken, due = clock.take([to_ms(T0), None, late, to_ms(T0 + timedelta(hours=3))])
    assert (taken, due) == (3, [])  # cut before the event reaching the label
    assert clock.clock_ms == to_ms(T0)  # the late event did not move it back
    # a batch of records without a time reveals nothing, whatever it holds
    assert clock.take([None, None]) == (2, [])
    # the late one alone: the next one reveals "a"
    assert clock.take([late, to_ms(T0 + timedelta(hours=3))]) == (1, [])
    assert [lb.label_id for lb in clock.take([to_ms(T0 + timedelta(hours=3))])[1]] == ["a"]
    assert RevealClock(None).take([1, 2, 3]) == (3, [])


def test_released_batches_end_at_reveal_times_and_hand_out_their_labels() -> None:
    hour = timedelta(hours=1)
    records = [record(k, T0 + k * hour) for k in range(6)]
    release = ReleasedBatches(
        batches(records, 4),
        clock=RevealClock(LabelSchedule([label("a", T0 + 3 * hour)], timedelta(0))),
        window=EventWindow.of(3600, None),
        wait_for=lambda _ms: 0.0,
        on_event_times=lambda _first, _last: None,
    )
    read = []
    while not release.exhausted:
        batch = release.read(4, 0.0)
        if batch:
            read.append(([m.offset for m in batch], [lb.label_id for lb in release.revealed()]))
    # the first chunk of four is cut before the event at T0 + 3h, which sees the label
    assert read == [([0, 1, 2], []), ([3], ["a"]), ([4, 5], [])]


# -- sources ----------------------------------------------------------------------------------


def test_event_time_is_read_from_valid_json_only() -> None:
    assert event_time_ms(b'{"event_time": "2026-03-01T08:00:00.000Z"}') == to_ms(T0)
    assert event_time_ms(b'{"event_time": "2026-03-01T08:00:00"}') is None  # no zone
    assert event_time_ms(b"not json") is None
    assert event_time_ms(b"[1]") is None
    assert event_time_ms(None) is None
    # the merge key falls back to the broker timestamp, then to -1
    assert record(5, None, partition=2, ts=1234).order_key == (1234, 2, 5)
    assert record(5, None, partition=2).order_key == (-1, 2, 5)


def test_a_jsonl_file_is_read_in_order_with_line_numbers_as_offsets(tmp_path: Path) -> None:
    lines = [
        orjson.dumps({"event_time": "2026-03-01T08:00:00Z", "n": 1}),
        b"",
        b"garbage",
        orjson.dumps({"event_time": "2026-03-01T09:00:00Z", "n": 2}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = FileSource(path)
    records = list(source.records())
    assert [r.offset for r in records] == [1, 3, 4]  # blank lines skipped, numbering kept
    assert [r.value for r in records] == [lines[0], lines[2], lines[3]]
    assert {r.topic for r in records} == {"file:events.jsonl"}
    assert source.total == 3
    # an event-time range keeps unreadable lines (they become dead letters)
    cut = FileSource(path, start=T0 + timedelta(minutes=30))
    assert [r.offset for r in cut.records()] == [3, 4]


def test_a_parquet_file_yields_the_same_events_as_its_jsonl_twin(tmp_path: Path) -> None:
    events = [
        {
            "schema_version": 1,
            "event_id": f"ev-{i}",
            "event_time": T0 + timedelta(minutes=i),
            "customer_id": "cus-1",
            "account_id": "acc-1",
            "channel": "card",
            "direction": "outbound",
            "amount_minor": 1000 + i,
            "currency": "EUR",
            "counterparty_id": "mer-1",
            "counterparty_type": "merchant",
            "terminal_id": "trm-1" if i % 2 else None,
            "country": "DE",
        }
        for i in range(3)
    ]
    table = pa.Table.from_pylist(
        events,
        schema=pa.schema(
            [
                (k, pa.timestamp("ms", tz="UTC") if k == "event_time" else pa.int64())
                if k in ("event_time", "amount_minor", "schema_version")
                else (k, pa.string())
                for k in events[0]
            ]
        ),
    )
    pq.write_table(table, tmp_path / "events.parquet")
    records = list(FileSource(tmp_path / "events.parquet").records())
    decoded = [decode(TransactionEvent, r.value) for r in records]
    assert [e.event_id for e in decoded] == ["ev-0", "ev-1", "ev-2"]
    assert [e.event_time for e in decoded] == [events[i]["event_time"] for i in range(3)]
    assert [e.terminal_id for e in decoded] == [None, "trm-1", None]  # nulls left out
    assert [r.offset for r in records] == [1, 2, 3]
    assert [r.event_time_ms for r in records] == [to_ms(e.event_time) for e in decoded]


def test_file_sources_refuse_what_they_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a file"):
        FileSource(tmp_path / "missing.jsonl")
    (tmp_path / "events.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match=r"\.jsonl or \.parquet"):
        FileSource(tmp_path / "events.csv")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(SourceError, match="empty"):
        FileSource(tmp_path / "e.jsonl", start=T0, end=T0)


def test_offset_bounds_parse_defaults_and_per_partition_values() -> None:
    bound = OffsetBound.parse(["100", "2:50"])
    assert (bound.for_partition(0), bound.for_partition(2)) == (100, 50)
    assert OffsetBound.parse(["1:7"]).for_partition(0) is None
    for bad in (["x"], ["1:y"], ["-3"]):
        with pytest.raises(SourceError):
            OffsetBound.parse(bad)


def test_ranges_stay_within_what_the_broker_still_holds() -> None:
    watermarks = {0: (10, 100), 1: (0, 40), 2: (5, 5)}
    ranges = clamp_ranges(watermarks, {0: 0, 1: 30, 2: None}, {0: 500, 1: 20, 2: None})
    assert [(r.partition, r.start, r.end) for r in ranges] == [(0, 10, 100), (1, 30, 30), (2, 5, 5)]
    assert [r.size for r in ranges] == [90, 0, 0]


# -- run ids ---------------------------------------------------------------------------------


def test_run_ids_fit_a_redis_namespace_and_a_topic_name() -> None:
    run_id = new_run_id("20260301T120000Z-student-tiny-with-a-long-name", T0, "ab12")
    assert run_id == "20260301T080000Z-20260301T120000Z-student-ab12"
    ContextSettings(namespace=namespace_for(run_id))  # validates the namespace pattern
    assert output_topic_for("risk.alerts", run_id) == f"risk.alerts.backtest.{run_id}"
    assert check_run_id("x" * 55)
    for bad in ("", "-x", "a/b", "x" * 56, "a b"):
        with pytest.raises(ReplayError):
            check_run_id(bad)


def test_a_missing_input_file_is_reported_before_any_model_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry is empty: had the model been looked up first, that would be the error.
    monkeypatch.setenv("RISKSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RISKSTREAM_MODEL__REGISTRY_DIR", str(tmp_path / "registry"))
    result = CliRunner().invoke(
        app, ["replay", "--file", str(tmp_path / "missing.jsonl"), "--no-labels"]
    )
    assert result.exit_code == 1
    assert "missing.jsonl is not a file" in result.output
