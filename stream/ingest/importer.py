"""``riskstream data import``: a bank's events (and labels) in, validated riskstream files out.

    labels table (if separate) ──► label rows, in memory (a share of the events, as columns)
    events table ──► batches ──► EventConverter ──► sorted runs on disk ──► merge ──► events.jsonl
                                       └─ same-table labels ─┐          (duplicates refused)
    label rows + imported events (joined on event id) ──────┴─► sorted ──► labels.jsonl
    every refused row ──► rejects.jsonl (input, row, kind, reason, detail), counts printed

The outputs are the files ``riskstream simulate`` writes (without ``truth.jsonl``: a bank has
labels, not the truth), so ``model dataset``, ``replay --file`` and ``backtest report`` read
them as they are. Events are in event-time order (ties by event id), labels in label-time
order. Memory stays bounded: one batch, one sort run (``run_rows`` records) and 8 bytes per
event for duplicate detection; a separate labels table is held in memory.

Files are written to a temporary directory inside ``out`` and moved into place at the end, so
an interrupted import leaves no half-written ``events.jsonl`` behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from pydantic import BaseModel
from tqdm.auto import tqdm

from models.maturity import observed_label_delay_days
from schemas.common import format_utc
from stream.ingest.errors import IngestError, InputError, MappingError
from stream.ingest.events import DUPLICATE_EVENT, MALFORMED, EventConverter, Reject
from stream.ingest.fields import Errors
from stream.ingest.labels import (
    DUPLICATE_LABEL,
    EVENT_REJECTED,
    UNKNOWN_EVENT,
    EventInfo,
    LabelFields,
    LabelParts,
    label_record,
)
from stream.ingest.mapping import Mapping, load_mapping
from stream.ingest.readers import TableReader
from stream.ingest.sorting import DEFAULT_RUN_ROWS, ExternalSorter

log = logging.getLogger(__name__)

EVENTS_FILE: Final = "events.jsonl"
LABELS_FILE: Final = "labels.jsonl"
REJECTS_FILE: Final = "rejects.jsonl"
SUMMARY_FILE: Final = "import.json"
_OUTPUTS: Final = (EVENTS_FILE, LABELS_FILE, REJECTS_FILE, SUMMARY_FILE)
_DAY_MS: Final = 86_400_000


class ImportSummary(BaseModel):
    """What an import did (``import.json``; the command prints it)."""

    mapping: str
    inputs: dict[str, dict[str, Any]]
    events_written: int
    labels_written: int
    suspicious_labels: int
    first_event_time: str | None
    last_event_time: str | None
    rejected: dict[str, dict[str, int]]
    """kind (event / label) -> reason -> rows."""
    rejected_rows: int
    input_rows: int
    label_rows_without_verdict: int
    suspicious_label_delay_days: dict[str, float] | None
    """p50, p90 and max of label_time - event_time over the suspicious labels."""
    suggested_maturity_days: float | None
    """models.maturity.observed_label_delay_days of those delays: the default maturity of
    `riskstream model dataset` on this output."""
    sort_runs: int
    seconds: float

    @property
    def reject_rate(self) -> float:
        return self.rejected_rows / self.input_rows if self.input_rows else 0.0


class _RejectLog:
    """rejects.jsonl, written as rows are refused, with counts by kind and reason."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, input_name: str, reject: Reject) -> None:
        self.counts[(reject.kind, reject.reason)] += 1
        self._file.write(
            orjson.dumps(
                {
                    "input": input_name,
                    "row": reject.row,
                    "kind": reject.kind,
                    "reason": reject.reason,
                    "detail": reject.detail,
                }
            )
            + b"\n"
        )

    def close(self) -> None:
        self._file.close()

    def by_kind(self) -> dict[str, dict[str, int]]:
        grouped: dict[str, dict[str, int]] = {}
        for (kind, reason), count in sorted(self.counts.items()):
            grouped.setdefault(kind, {})[reason] = count
        return grouped


@dataclass
class _LabelRow:
    parts: LabelParts
    index: int
    row: int


@dataclass
class _State:
    """What the events pass learns for the later steps."""

    rows: int = 0
    id_hashes: array[int] = field(default_factory=lambda: array("q"))
    infos: dict[str, EventInfo] = field(default_factory=dict)
    rejected_ids: dict[str, Reject] = field(default_factory=dict)


def _progress(reader: TableReader, what: str, enabled: bool) -> Any:
    if reader.format == "parquet":
        return tqdm(total=reader.rows_total, desc=what, unit="rows", disable=not enabled)
    return tqdm(total=reader.size_bytes, desc=what, unit="B", unit_scale=True, disable=not enabled)


def _advance(bar: Any, reader: TableReader, rows: int) -> None:
    if reader.format == "parquet":
        bar.update(rows)
    else:
        bar.update(reader.position()[0] - bar.n)


def run_import(
    events_path: Path,
    mapping_path: Path,
    out_dir: Path,
    *,
    labels_path: Path | None = None,
    run_rows: int = DEFAULT_RUN_ROWS,
    overwrite: bool = False,
    progress: bool = True,
) -> ImportSummary:
    """Import ``events_path`` (and ``labels_path``) into ``out_dir`` under the mapping."""
    started = time.perf_counter()
    mapping = load_mapping(mapping_path)
    from_file = mapping.labels is not None and mapping.labels.from_ == "file"
    if from_file and labels_path is None:
        raise MappingError(
            f'{mapping_path.name} takes labels from a separate file (from = "file"): '
            "give it with --labels"
        )
    if labels_path is not None and not from_file:
        raise MappingError(
            f'--labels was given, but {mapping_path.name} has no [labels] table with from = "file"'
        )
    _prepare(out_dir, overwrite)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".import-"))
    try:
        return _import(
            mapping, mapping_path, events_path, labels_path, out_dir, work, run_rows, progress,
            started,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare(out_dir: Path, overwrite: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "truth.jsonl").exists() or (out_dir / "truth.parquet").exists():
        raise IngestError(
            f"{out_dir} holds a simulator truth file: importing there would make training "
            "read the simulator's truth for the bank's events; choose another --out"
        )
    present = [name for name in _OUTPUTS if (out_dir / name).exists()]
    if present and not overwrite:
        raise IngestError(f"{out_dir} already holds {', '.join(present)}: give --force to replace")
    if overwrite and (out_dir / "narratives").is_dir():
        # a dataset cache built from the previous import would be read as if it were current
        shutil.rmtree(out_dir / "narratives")
        log.info("removed %s: it was built from the previous import", out_dir / "narratives")


def _import(
    mapping: Mapping,
    mapping_path: Path,
    events_path: Path,
    labels_path: Path | None,
    out_dir: Path,
    work: Path,
    run_rows: int,
    progress: bool,
    started: float,
) -> ImportSummary:
    rejects = _RejectLog(work / REJECTS_FILE)
    events_sorter = ExternalSorter(work, run_rows=run_rows)
    label_sorter = ExternalSorter(work, run_rows=run_rows)
    inputs: dict[str, dict[str, Any]] = {}
    try:
        label_rows: list[_LabelRow] = []
        label_input_rows = without_verdict = 0
        if labels_path is not None:
            label_rows, label_input_rows, without_verdict = _read_label_table(
                labels_path, mapping, rejects, progress
            )
            inputs["labels"] = {"path": str(labels_path), "rows": label_input_rows}
        wanted = {r.parts.event_ids[r.index] for r in label_rows}
        reader = TableReader(events_path, mapping.input, _event_columns(mapping))
        converter = EventConverter(mapping, {w for w in wanted if w is not None})
        state = _State()
        with _progress(reader, events_path.name, progress) as bar:
            for batch in reader.batches():
                converted = converter.convert(batch)
                state.rows += converted.rows
                events_sorter.add(converted.records)
                label_sorter.add(converted.label_records)
                state.id_hashes.extend(converted.id_hashes)
                for reject in converted.rejects:
                    rejects.add(events_path.name, reject)
                for event_id, info in converted.infos.items():
                    state.infos.setdefault(event_id, info)
                for event_id, reject in converted.rejected_ids.items():
                    state.rejected_ids.setdefault(event_id, reject)
                _advance(bar, reader, batch.size)
        inputs["events"] = {"path": str(events_path), "format": reader.format, "rows": state.rows}
        if state.rows == 0:
            raise InputError(f"{events_path.name} holds no data rows")
        duplicates = _duplicates(state.id_hashes, events_sorter)
        written, first_ms, last_ms, duplicate_rows = _write_events(
            events_sorter, work / EVENTS_FILE, duplicates, rejects, events_path.name
        )
        if labels_path is not None:
            _join_labels(label_rows, state, mapping, label_sorter, rejects, labels_path.name)
        labels_written, delays = _write_labels(
            label_sorter,
            work / LABELS_FILE,
            rejects,
            labels_path.name if labels_path else events_path.name,
            duplicate_rows if labels_path is None else set(),
        )
        rejects.close()
        if written == 0:
            shutil.copy(work / REJECTS_FILE, out_dir / REJECTS_FILE)
            raise InputError(
                f"no row of {events_path.name} could be imported: see {out_dir / REJECTS_FILE}"
            )
        summary = ImportSummary(
            mapping=str(mapping_path),
            inputs=inputs,
            events_written=written,
            labels_written=labels_written,
            suspicious_labels=len(delays),
            first_event_time=_iso(first_ms),
            last_event_time=_iso(last_ms),
            rejected=rejects.by_kind(),
            rejected_rows=sum(rejects.counts.values()),
            input_rows=state.rows + label_input_rows,
            label_rows_without_verdict=without_verdict,
            suspicious_label_delay_days=_delay_stats(delays),
            suggested_maturity_days=observed_label_delay_days(delays) if delays else None,
            sort_runs=events_sorter.runs,
            seconds=round(time.perf_counter() - started, 2),
        )
        (work / SUMMARY_FILE).write_bytes(
            orjson.dumps(summary.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
        )
        for name in _OUTPUTS:
            (work / name).replace(out_dir / name)
        return summary
    finally:
        rejects.close()
        events_sorter.close()
        label_sorter.close()


def _event_columns(mapping: Mapping) -> set[str]:
    columns = mapping.events.columns()
    if mapping.labels is not None and mapping.labels.from_ == "events":
        columns |= mapping.labels.columns()
    return columns


def _read_label_table(
    path: Path, mapping: Mapping, rejects: _RejectLog, progress: bool
) -> tuple[list[_LabelRow], int, int]:
    """(label rows to join, rows read, rows whose verdict says no label)."""
    assert mapping.labels is not None
    labels = mapping.labels
    reader = TableReader(path, labels.input, labels.columns())
    fields = LabelFields(
        labels, events_id_prefix=mapping.events.event_id.prefix, trim=labels.input.trim
    )
    kept: list[_LabelRow] = []
    rows = without_verdict = 0
    with _progress(reader, path.name, progress) as bar:
        for batch in reader.batches():
            errors: Errors = {}
            parts = fields.convert(batch.columns, batch.size, errors)
            for index in range(batch.size):
                reason = batch.malformed.get(index)
                if reason == "":  # a blank line
                    continue
                rows += 1
                row = batch.first_row + index
                if reason is not None:
                    rejects.add(path.name, Reject(row, "label", MALFORMED, reason))
                elif index in errors:
                    rejects.add(path.name, Reject(row, "label", *errors[index]))
                elif not parts.labelled(index):
                    without_verdict += 1
                else:
                    kept.append(_LabelRow(parts, index, row))
            _advance(bar, reader, batch.size)
    if rows == 0:
        raise InputError(f"{path.name} holds no data rows")
    return kept, rows, without_verdict


def _duplicates(id_hashes: array[int], sorter: ExternalSorter) -> dict[str, int]:
    """Event ids that occur more than once -> the row of their first occurrence. A hash seen
    twice is only a candidate (two ids may share one); candidates are checked on the ids."""
    hashes = np.frombuffer(id_hashes, dtype=np.int64) if len(id_hashes) else np.zeros(0, np.int64)
    ordered = np.sort(hashes)
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return {}
    first: dict[str, int] = {}
    seen: Counter[str] = Counter()
    for record in sorter.unsorted():
        _, ident_bytes, row_bytes, _ = record.split(b"\t", 3)
        ident = ident_bytes.decode()
        if hash(ident) in repeated:
            seen[ident] += 1
            row = int(row_bytes)
            first[ident] = min(first.get(ident, row), row)
    return {ident: row for ident, row in first.items() if seen[ident] > 1}


def _write_events(
    sorter: ExternalSorter,
    path: Path,
    duplicates: dict[str, int],
    rejects: _RejectLog,
    input_name: str,
) -> tuple[int, int | None, int | None, set[int]]:
    """(events written, first and last event time in ms, rows refused as duplicates)."""
    written = 0
    first_ms = last_ms = None
    duplicate_rows: set[int] = set()
    with path.open("wb") as file:
        chunk: list[bytes] = []
        for record in sorter.sorted():
            moment, ident, row, payload = record.split(b"\t", 3)
            if duplicates and (kept := duplicates.get(ident.decode())) not in (None, int(row)):
                duplicate_rows.add(int(row))
                rejects.add(
                    input_name,
                    Reject(
                        int(row),
                        "event",
                        DUPLICATE_EVENT,
                        f"event_id {ident.decode()!r} was imported from row {kept}",
                    ),
                )
                continue
            if first_ms is None:
                first_ms = int(moment)
            last_ms = int(moment)
            chunk.append(payload)
            if len(chunk) >= 10_000:
                file.write(b"\n".join(chunk) + b"\n")
                written += len(chunk)
                chunk = []
        if chunk:
            file.write(b"\n".join(chunk) + b"\n")
            written += len(chunk)
    return written, first_ms, last_ms, duplicate_rows


def _join_labels(
    label_rows: list[_LabelRow],
    state: _State,
    mapping: Mapping,
    sorter: ExternalSorter,
    rejects: _RejectLog,
    input_name: str,
) -> None:
    assert mapping.labels is not None
    delay = mapping.labels.delay_td
    delay_ms = None if delay is None else int(delay.total_seconds() * 1000)
    records: list[bytes] = []
    for item in label_rows:
        event_id = item.parts.event_ids[item.index]
        assert event_id is not None
        info = state.infos.get(event_id)
        if info is None:
            refused = state.rejected_ids.get(event_id)
            reject = (
                Reject(
                    item.row,
                    "label",
                    EVENT_REJECTED,
                    f"its event {event_id!r} (events row {refused.row}) was rejected: "
                    f"{refused.reason}",
                )
                if refused is not None
                else Reject(
                    item.row, "label", UNKNOWN_EVENT, f"no imported event has id {event_id!r}"
                )
            )
            rejects.add(input_name, reject)
            continue
        record, problem = label_record(item.parts, item.index, event_id, info, delay_ms, item.row)
        if problem is not None:
            rejects.add(input_name, Reject(item.row, "label", *problem))
        else:
            assert record is not None
            records.append(record)
    sorter.add(records)


def _write_labels(
    sorter: ExternalSorter,
    path: Path,
    rejects: _RejectLog,
    input_name: str,
    duplicate_rows: set[int],
) -> tuple[int, list[float]]:
    """(labels written, label delays in days of the suspicious ones)."""
    seen: set[str] = set()
    delays: list[float] = []
    written = 0
    with path.open("wb") as file:
        for record in sorter.sorted():
            moment, ident_bytes, row_bytes, payload = record.split(b"\t", 3)
            ident, row = ident_bytes.decode(), int(row_bytes)
            if row in duplicate_rows:
                rejects.add(
                    input_name,
                    Reject(row, "label", EVENT_REJECTED, "its event was refused as a duplicate"),
                )
                continue
            if ident in seen:
                rejects.add(
                    input_name,
                    Reject(row, "label", DUPLICATE_LABEL, f"label_id {ident!r} came before"),
                )
                continue
            seen.add(ident)
            file.write(payload + b"\n")
            written += 1
            if b'"is_suspicious":true' in payload:
                event_time = orjson.loads(payload)["event_time"]
                event_ms = datetime.fromisoformat(event_time).timestamp() * 1000
                delays.append((int(moment) - event_ms) / _DAY_MS)
    return written, delays


def _delay_stats(delays: list[float]) -> dict[str, float] | None:
    if not delays:
        return None
    values = np.asarray(delays)
    return {
        "p50": round(float(np.quantile(values, 0.5)), 2),
        "p90": round(float(np.quantile(values, 0.9)), 2),
        "max": round(float(values.max()), 2),
    }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else format_utc(datetime.fromtimestamp(ms / 1000, UTC))
