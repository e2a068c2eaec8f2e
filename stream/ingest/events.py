"""One batch of the events table -> `TransactionEvent` lines (as sort records) and rejects.

Every field is converted column-wise (``fields``), then each row is assembled in the
TransactionEvent's field order, encoded with orjson and put through the wire format's strict
decoder (``schemas.codec.decode``) - the check the scorer makes on every message. The line
written is those very bytes: timestamps are already RFC 3339 UTC with milliseconds and a Z,
keys in field order, no nulls, so it is byte for byte what ``schemas.codec.encode`` makes of
the decoded event (and what ``riskstream simulate`` writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import orjson

from schemas import DecodeError, TransactionEvent, decode
from stream.ingest.fields import Errors, amount_values, text_values, time_values, wire_times
from stream.ingest.labels import EventInfo, LabelFields, label_record
from stream.ingest.mapping import Mapping
from stream.ingest.readers import Batch

MALFORMED: Final = "malformed_row"
INVALID_EVENT: Final = "invalid_event"
DUPLICATE_EVENT: Final = "duplicate_event_id"
_OPTIONAL: Final = {"customer_segment", "terminal_id", "mcc", "device_id", "ip_fingerprint", "memo"}


@dataclass(frozen=True, slots=True)
class Reject:
    row: int
    kind: str
    """``event`` or ``label``: which record of the row failed."""
    reason: str
    detail: str


@dataclass
class Converted:
    """What one batch produced."""

    records: list[bytes] = field(default_factory=list)
    label_records: list[bytes] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    id_hashes: list[int] = field(default_factory=list)
    """hash() of each valid event's id (duplicate detection: 8 bytes per event)."""
    infos: dict[str, EventInfo] = field(default_factory=dict)
    """Valid events a separate labels table asks about, by id (first occurrence)."""
    rejected_ids: dict[str, Reject] = field(default_factory=dict)
    """Rejected rows a separate labels table asks about, by the id they would have had."""
    rows: int = 0
    """Data rows (blank JSONL lines are not rows)."""


class EventConverter:
    """Converts batches of one events table under one mapping."""

    def __init__(self, mapping: Mapping, wanted_ids: set[str] | None = None) -> None:
        self.mapping = mapping
        self.trim = mapping.input.trim
        self.wanted = wanted_ids or set()
        labels = mapping.labels
        self.labels: LabelFields | None = None
        if labels is not None and labels.from_ == "events":
            self.labels = LabelFields(
                labels, events_id_prefix=mapping.events.event_id.prefix, trim=self.trim
            )

    def convert(self, batch: Batch) -> Converted:
        events = self.mapping.events
        size, columns = batch.size, batch.columns
        errors: Errors = {
            index: (MALFORMED, reason) for index, reason in batch.malformed.items() if reason
        }
        blank = {index for index, reason in batch.malformed.items() if not reason}
        texts: dict[str, list[str | None]] = {}
        for name, spec in events.text_fields():
            column = columns.get(spec.column) if spec.column is not None else None
            texts[name] = text_values(
                name, spec, column, size, errors, required=name not in _OPTIONAL, trim=self.trim
            )
        event_ms, _ = time_values(
            "event_time", events.event_time, columns[events.event_time.column], errors
        )
        amounts = amount_values(
            events.amount, columns[events.amount.column], texts["currency"], errors
        )
        printable = event_ms.copy()
        printable[list(errors)] = 0  # a rejected row's time may be out of any range
        times = wire_times(printable)
        label_errors: Errors = {}
        parts = self.labels.convert(columns, size, label_errors) if self.labels else None

        names = ["schema_version"]
        fields: list[list[str | None] | list[int | None] | list[str] | list[int]] = [[1] * size]
        for name in TransactionEvent.model_fields:
            if name == "event_time":
                fields.append(times)
            elif name == "amount_minor":
                fields.append(amounts)
            elif name in texts:
                fields.append(texts[name])
            else:
                continue
            names.append(name)
        # fields that may be absent from a row: left out of its JSON, as encode() does
        nullable = [name for name, values in zip(names, fields, strict=True) if None in values]
        refused = set(errors) | set(label_errors) | blank
        labelled = (
            {i for i in range(size) if parts.labelled(i)} if parts is not None else set[int]()
        )
        ids = texts["event_id"]
        moments = event_ms.tolist()
        out = Converted(rows=size - len(blank))
        for index, row_values in enumerate(zip(*fields, strict=True)):
            if index in refused:
                if index not in blank:
                    self._refuse(out, batch.first_row + index, index, errors, label_errors, ids)
                continue
            data = dict(zip(names, row_values, strict=True))
            if nullable:
                for name in nullable:
                    if data[name] is None:
                        del data[name]
            raw = orjson.dumps(data)
            event_id: str = data["event_id"]
            row = batch.first_row + index
            try:
                decode(TransactionEvent, raw)
            except DecodeError as exc:
                self._reject(out, Reject(row, "event", INVALID_EVENT, exc.reason), event_id)
                continue
            moment = moments[index]
            if index in labelled:
                assert parts is not None
                assert self.labels is not None
                record, problem = label_record(
                    parts, index, event_id, self._info(row, moment, data), self.labels.delay_ms, row
                )
                if problem is not None:
                    self._reject(out, Reject(row, "label", *problem), event_id)
                    continue
                assert record is not None
                out.label_records.append(record)
            out.records.append(b"%013d\t%s\t%012d\t%s" % (moment, event_id.encode(), row, raw))
            out.id_hashes.append(hash(event_id))
            if event_id in self.wanted and event_id not in out.infos:
                out.infos[event_id] = self._info(row, moment, data)
        return out

    @staticmethod
    def _info(row: int, moment: int, data: dict[str, object]) -> EventInfo:
        terminal = data.get("terminal_id")
        return EventInfo(
            row,
            moment,
            str(data["event_time"]),
            str(data["customer_id"]),
            str(data["counterparty_id"]),
            None if terminal is None else str(terminal),
        )

    def _refuse(
        self,
        out: Converted,
        row: int,
        index: int,
        errors: Errors,
        label_errors: Errors,
        ids: list[str | None],
    ) -> None:
        if index in errors:
            self._reject(out, Reject(row, "event", *errors[index]), ids[index])
        else:
            self._reject(out, Reject(row, "label", *label_errors[index]), ids[index])

    def _reject(self, out: Converted, reject: Reject, event_id: object) -> None:
        out.rejects.append(reject)
        if isinstance(event_id, str) and event_id in self.wanted:
            out.rejected_ids.setdefault(event_id, reject)
