"""Labels: the mapped label fields of a batch, and one `LabelEvent` line per labelled event.

A label row names its event (the same row of the events table, or an ``event_id`` column of a
separate table) and says what it turned out to be: the ``verdict`` (suspicious, legitimate,
or unlabelled: no label), the typology of a suspicious one, the label source and when the
label became known (a column, or the event time plus a fixed ``delay``). The event's own
fields (customer, time, counterparty, terminal) are copied from the imported event, so a
label can never disagree with it; the line is then validated by the wire format's strict
decoder like any label arriving on ``risk.labels``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import orjson
import pyarrow as pa
from numpy.typing import NDArray

from schemas import DecodeError, LabelEvent, decode
from schemas.common import format_utc
from stream.ingest.fields import MISSING, Errors, text_values, time_values
from stream.ingest.mapping import LabelsMapping, TextField
from stream.ingest.sorting import record_key

UNKNOWN_EVENT: Final = "unknown_event"
EVENT_REJECTED: Final = "event_rejected"
BEFORE_EVENT: Final = "label_before_event"
INVALID_LABEL: Final = "invalid_label"
DUPLICATE_LABEL: Final = "duplicate_label_id"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What a label copies from its imported event."""

    row: int
    event_ms: int
    event_time: str
    customer_id: str
    counterparty_id: str
    terminal_id: str | None


@dataclass
class LabelParts:
    """The label fields of one batch, one entry per row."""

    event_ids: list[str | None]
    time_ms: NDArray[np.int64]
    has_time: NDArray[np.bool_]
    verdicts: list[str | None]
    typologies: list[str | None]
    sources: list[str | None]
    label_ids: list[str | None]
    notes: list[str | None]
    alert_ids: list[str | None]
    scenario_ids: list[str | None]

    def labelled(self, index: int) -> bool:
        return self.verdicts[index] not in (None, "unlabelled")

    def extend(self, other: LabelParts) -> None:
        for name in (
            "event_ids",
            "verdicts",
            "typologies",
            "sources",
            "label_ids",
            "notes",
            "alert_ids",
            "scenario_ids",
        ):
            getattr(self, name).extend(getattr(other, name))
        self.time_ms = np.concatenate([self.time_ms, other.time_ms])
        self.has_time = np.concatenate([self.has_time, other.has_time])


class LabelFields:
    """Converts the label columns of a batch (of the events table or of the labels table)."""

    def __init__(self, mapping: LabelsMapping, *, events_id_prefix: str, trim: bool) -> None:
        self.mapping = mapping
        self.trim = trim
        self.delay_ms = (
            None if mapping.delay_td is None else mapping.delay_td // timedelta(milliseconds=1)
        )
        self.event_id_spec: TextField | None = None
        if mapping.event_id is not None:
            spec = mapping.event_id
            if not spec.prefix and spec.column is not None:
                spec = spec.model_copy(update={"prefix": events_id_prefix})
            self.event_id_spec = spec

    def _text(
        self,
        name: str,
        spec: TextField | None,
        columns: dict[str, pa.Array],
        size: int,
        errors: Errors,
    ) -> list[str | None]:
        if spec is None:
            return [None] * size
        column = columns.get(spec.column) if spec.column is not None else None
        return text_values(
            f"label {name}", spec, column, size, errors, required=False, trim=self.trim
        )

    def convert(self, columns: dict[str, pa.Array], size: int, errors: Errors) -> LabelParts:
        m = self.mapping
        verdict_errors: Errors = {}
        verdicts = self._text("verdict", m.verdict, columns, size, verdict_errors)
        labelled = [v not in (None, "unlabelled") for v in verdicts]
        if m.label_time is not None:
            time_ms, has_time = time_values(
                "label_time", m.label_time, columns[m.label_time.column], errors, required=False
            )
        else:
            time_ms, has_time = np.zeros(size, np.int64), np.zeros(size, np.bool_)
        parts = LabelParts(
            event_ids=self._text("event_id", self.event_id_spec, columns, size, errors),
            time_ms=time_ms,
            has_time=has_time,
            verdicts=verdicts,
            typologies=self._text("typology", m.typology, columns, size, errors),
            sources=self._text("source", m.source, columns, size, errors),
            label_ids=self._text("label_id", m.label_id, columns, size, errors),
            notes=self._text("note", m.note, columns, size, errors),
            alert_ids=self._text("alert_id", m.alert_id, columns, size, errors),
            scenario_ids=self._text("scenario_id", m.scenario_id, columns, size, errors),
        )
        # Problems in the label columns of a row without a label do not matter; a verdict
        # that is not in the mapping's values is a problem of its own.
        for index in [i for i in errors if not labelled[i]]:
            del errors[index]
        for index, problem in verdict_errors.items():
            errors.setdefault(index, problem)
        for index, is_labelled in enumerate(labelled):
            if not is_labelled:
                continue
            for name, value in (
                ("event_id", parts.event_ids[index] if self.event_id_spec else ""),
                ("source", parts.sources[index]),
                (
                    "typology",
                    "legitimate" if verdicts[index] == "legitimate" else parts.typologies[index],
                ),
            ):
                if value is None:
                    errors.setdefault(index, (MISSING, f"label {name}: no value"))
            if not has_time[index] and self.delay_ms is None:
                errors.setdefault(index, (MISSING, "label_time: no value, and no delay is set"))
        return parts


def label_record(
    parts: LabelParts,
    index: int,
    event_id: str,
    info: EventInfo,
    delay_ms: int | None,
    row: int,
) -> tuple[bytes | None, tuple[str, str] | None]:
    """(sort record, None) for a valid label, (None, (reason, detail)) for a rejected one.

    The record's key is (label time, label id, the label's input ``row``): labels are written
    in label-time order, as the simulator writes them and as a replay reveals them."""
    if parts.has_time[index]:
        label_ms = int(parts.time_ms[index])
    else:
        assert delay_ms is not None  # checked when the row was converted
        label_ms = info.event_ms + delay_ms
    if label_ms < info.event_ms:
        return None, (
            BEFORE_EVENT,
            f"label_time {_wire(label_ms)} is before its event's time {info.event_time}",
        )
    suspicious = parts.verdicts[index] == "suspicious"
    typology = parts.typologies[index] if suspicious else "legitimate"
    source = parts.sources[index]
    label_id = parts.label_ids[index] or _label_id(event_id, source, label_ms, typology)
    data: dict[str, object] = {
        "schema_version": 1,
        "label_id": label_id,
        "event_id": event_id,
        "customer_id": info.customer_id,
        "event_time": info.event_time,
        "label_time": _wire(label_ms),
        "source": source,
        "is_suspicious": suspicious,
        "typology": typology,
        "counterparty_id": info.counterparty_id,
    }
    for name, value in (
        ("terminal_id", info.terminal_id),
        ("alert_id", parts.alert_ids[index]),
        ("scenario_id", parts.scenario_ids[index]),
        ("note", parts.notes[index]),
    ):
        if value is not None:
            data[name] = value
    raw = orjson.dumps(data)
    try:
        decode(LabelEvent, raw)
    except DecodeError as exc:
        return None, (INVALID_LABEL, exc.reason)
    return record_key(label_ms, label_id, row) + raw, None


def _label_id(event_id: str, source: str | None, label_ms: int, typology: str | None) -> str:
    """A stable id for a label whose table has none: the same label imported twice gets the
    same id (and is refused as a duplicate), a re-import gives the same file."""
    digest = hashlib.blake2b(
        f"{event_id}\x1f{source}\x1f{label_ms}\x1f{typology}".encode(), digest_size=12
    )
    return f"lbl-{digest.hexdigest()}"


def _wire(ms: int) -> str:
    return format_utc(_EPOCH + timedelta(milliseconds=ms))
