"""The mapping file: how a bank's columns become `TransactionEvent` and `LabelEvent` fields.

TOML (read with the standard library's ``tomllib``), one table per target::

    [input]                 how to read the events file (format, delimiter, encoding, nulls)
    [events]                every TransactionEvent field: a column, a constant or a rule
    [labels]                where labels come from (`from = "events"` or `"file"`) and their
    [labels.input]          fields; the labels file's reading options when `from = "file"`

A field is a column name (``customer_id = "ClientNo"``) or a table: ``column`` or ``value`` (a
constant), then optionally ``case`` (upper/lower), ``values`` (a map of source values to
riskstream values; a value not in it is a rejected row unless ``other`` gives one for the
rest) and ``prefix`` (prepended to ids, so two banks' ids cannot collide). Timestamps add
``format``, ``timezone``, ``dst`` and ``day_end``; the amount says its ``unit``. Everything a
constant or a value map can produce is checked here, when the file is read, so a typo in a
mapping fails at once rather than row by row. docs/your-data.md has a full example.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import LabelSource, Typology
from schemas.common import Channel, CounterpartyType, CustomerSegment, Direction
from schemas.reference import COUNTRY_CODES, CURRENCY_CODES
from stream.ingest.errors import MappingError

Format = Literal["csv", "parquet", "jsonl"]
SUFFIX_FORMATS: Final[dict[str, Format]] = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
ISO8601: Final = "iso8601"
EPOCH_FORMATS: Final = {"epoch_seconds": 1000, "epoch_millis": 1}

VERDICTS: Final = ("suspicious", "legitimate", "unlabelled")
"""What a label's verdict column can map to; `unlabelled` produces no label for the row."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _shorthand(data: Any) -> Any:
    """``field = "Column"`` means ``field = { column = "Column" }``."""
    return {"column": data} if isinstance(data, str) else data


class InputOptions(_Strict):
    """How to read one input file."""

    format: Format | None = Field(None, description="Default: from the file's suffix.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV only.")
    quote: str = Field('"', min_length=1, max_length=1, description="CSV only.")
    encoding: str = Field("utf-8", description="CSV only; transcoded to UTF-8 when read.")
    null_values: tuple[str, ...] = Field(
        ("",), description="CSV only: cell texts that mean 'no value'."
    )
    trim: bool = Field(False, description="Strip spaces around every text value.")

    def resolve_format(self, path: Path) -> Format:
        if self.format is not None:
            return self.format
        found = SUFFIX_FORMATS.get(path.suffix.lower())
        if found is None:
            raise MappingError(
                f"cannot tell the format of {path.name} from its suffix: set format = "
                '"csv", "parquet" or "jsonl" in the mapping\'s input table'
            )
        return found


class TextField(_Strict):
    """A text value: an id, a code or a category."""

    column: str | None = None
    value: str | None = Field(None, description="A constant for every row.")
    case: Literal["upper", "lower"] | None = None
    values: dict[str, str] | None = Field(None, description="Source value -> riskstream value.")
    other: str | None = Field(None, description="With `values`: the value for any other.")
    prefix: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return _shorthand(data)

    @model_validator(mode="after")
    def _one_source(self) -> TextField:
        if (self.column is None) == (self.value is None):
            raise ValueError("give either `column` or `value` (a constant), not both or neither")
        if self.value is not None and (self.values or self.other or self.case or self.prefix):
            raise ValueError("a constant `value` takes no case, values, other or prefix")
        if self.other is not None and self.values is None:
            raise ValueError("`other` needs a `values` map")
        return self

    def targets(self) -> list[str]:
        """Every value this field can produce without reading a row (constants, map values)."""
        found = [v for v in (self.value, self.other) if v is not None]
        return found + list((self.values or {}).values())


class TimeField(_Strict):
    """A moment: an ISO 8601 text, a `strptime` pattern, epoch numbers or a timestamp column."""

    column: str
    format: str = Field(
        ISO8601,
        description="iso8601, epoch_seconds, epoch_millis, or a strptime pattern such as "
        "'%d/%m/%Y %H:%M'. Ignored for timestamp and date columns.",
    )
    timezone: str | None = Field(
        None, description="IANA zone of values without a UTC offset, e.g. Europe/Paris."
    )
    dst: Literal["reject", "earliest", "latest"] = Field(
        "reject",
        description="A local time that a daylight-saving change makes ambiguous or skips: "
        "reject the row, or take the earlier or later instant.",
    )
    day_end: bool = Field(
        False,
        description="The values are dates: take the end of the day (23:59:59.999 local), not "
        "its start - for label dates, so a label is never known earlier than it was.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return _shorthand(data)

    @model_validator(mode="after")
    def _known_zone(self) -> TimeField:
        if self.timezone is not None:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {self.timezone!r} (an IANA name such as Europe/Paris)"
                ) from None
        return self

    @property
    def has_offset(self) -> bool:
        """Whether a pattern carries the UTC offset itself (%z)."""
        return "%z" in self.format


class AmountField(_Strict):
    """The amount, in the currency's major units (12.34) or minor units (1234)."""

    column: str
    unit: Literal["major", "minor"]
    decimal_separator: Literal[".", ","] = "."

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return _shorthand(data)


class EventsMapping(_Strict):
    """One entry per TransactionEvent field (schema_version is always 1)."""

    event_id: TextField
    event_time: TimeField
    customer_id: TextField
    account_id: TextField
    customer_segment: TextField | None = None
    channel: TextField
    direction: TextField
    amount: AmountField
    currency: TextField
    counterparty_id: TextField
    counterparty_type: TextField
    terminal_id: TextField | None = None
    mcc: TextField | None = None
    country: TextField
    device_id: TextField | None = None
    ip_fingerprint: TextField | None = None
    memo: TextField | None = None

    def text_fields(self) -> list[tuple[str, TextField]]:
        """(name, spec) of every mapped text field, in TransactionEvent field order."""
        return [
            (name, spec)
            for name in type(self).model_fields
            if isinstance(spec := getattr(self, name), TextField)
        ]

    def columns(self) -> set[str]:
        return _columns(self)


class LabelsMapping(_Strict):
    """Labels from columns of the events table, or from a separate table joined on event id."""

    from_: Literal["events", "file"] = Field(alias="from")
    input: InputOptions = InputOptions()
    event_id: TextField | None = Field(
        None,
        description="`from = \"file\"` only: the labelled event's id. The events' event_id "
        "prefix applies unless this field sets its own.",
    )
    label_time: TimeField | None = None
    delay: str | None = Field(
        None, description="Label time = event time + this (e.g. '45d', '36h') where none is given."
    )
    verdict: TextField
    typology: TextField | None = None
    source: TextField
    label_id: TextField | None = None
    note: TextField | None = None
    alert_id: TextField | None = None
    scenario_id: TextField | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LabelsMapping:
        if self.from_ == "file" and self.event_id is None:
            raise ValueError("labels from a file need `event_id`: the column to join on")
        if self.from_ == "events" and self.event_id is not None:
            raise ValueError("labels from the events table are joined by row: drop `event_id`")
        if self.label_time is None and self.delay is None:
            raise ValueError("give `label_time` (a column) or `delay` (a fixed reporting delay)")
        if self.delay is not None:
            parse_delay(self.delay)
        if self.typology is None and self._only_verdict() != "legitimate":
            raise ValueError(
                "`typology` is required: a suspicious label names its typology, e.g. "
                'typology = { value = "stolen_card" }'
            )
        return self

    def _only_verdict(self) -> str | None:
        targets = set(self.verdict.targets()) - {"unlabelled"}
        if self.verdict.column is not None and self.verdict.values is None:
            return None  # the column's own values, whatever they are
        return targets.pop() if len(targets) == 1 else None

    @property
    def delay_td(self) -> timedelta | None:
        return None if self.delay is None else parse_delay(self.delay)

    def columns(self) -> set[str]:
        return _columns(self)


class Mapping(_Strict):
    input: InputOptions = InputOptions()
    events: EventsMapping
    labels: LabelsMapping | None = None

    @model_validator(mode="after")
    def _domains(self) -> Mapping:
        problems = [
            f"{where}: {problem}"
            for where, spec, domain in self._domain_fields()
            if spec is not None
            for problem in _outside(spec, domain)
        ]
        for where, spec in [*self._text_fields()]:
            if spec.prefix and where.rsplit(".", 1)[1] in _DOMAINS:
                problems.append(f"{where}: a prefix makes no sense on a code or category")
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return self

    def _text_fields(self) -> list[tuple[str, TextField]]:
        found = [(f"events.{name}", spec) for name, spec in self.events.text_fields()]
        if self.labels is not None:
            for name in type(self.labels).model_fields:
                spec = getattr(self.labels, name)
                if isinstance(spec, TextField):
                    found.append((f"labels.{name}", spec))
        return found

    def _domain_fields(self) -> list[tuple[str, TextField | None, frozenset[str]]]:
        return [
            (where, spec, _DOMAINS[where.rsplit(".", 1)[1]])
            for where, spec in self._text_fields()
            if where.rsplit(".", 1)[1] in _DOMAINS
        ]


_DOMAINS: Final[dict[str, frozenset[str]]] = {
    "channel": frozenset(c.value for c in Channel),
    "direction": frozenset(d.value for d in Direction),
    "counterparty_type": frozenset(c.value for c in CounterpartyType),
    "customer_segment": frozenset(s.value for s in CustomerSegment),
    "currency": CURRENCY_CODES,
    "country": COUNTRY_CODES,
    "verdict": frozenset(VERDICTS),
    "typology": frozenset(t.value for t in Typology if t is not Typology.LEGITIMATE),
    "source": frozenset(s.value for s in LabelSource),
}


def _outside(spec: TextField, domain: frozenset[str]) -> list[str]:
    bad = sorted({t for t in spec.targets() if t not in domain})
    if not bad:
        return []
    shown = ", ".join(sorted(domain)) if len(domain) <= 12 else "see the ISO code lists"
    return [f"{', '.join(map(repr, bad))} is not one of: {shown}"]


def _columns(mapping: BaseModel) -> set[str]:
    found: set[str] = set()
    for name in type(mapping).model_fields:
        spec = getattr(mapping, name)
        column = getattr(spec, "column", None)
        if isinstance(spec, (TextField, TimeField, AmountField)) and column is not None:
            found.add(column)
    return found


_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms])\s*$")
_DELAY_UNIT_S: Final = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_delay(text: str) -> timedelta:
    """``"45d"``, ``"36h"``, ``"90m"``, ``"30s"``: a fixed, non-negative reporting delay."""
    match = _DELAY.match(text)
    if match is None:
        raise ValueError(f"delay {text!r} is not a duration such as '45d' or '36h'")
    return timedelta(seconds=float(match[1]) * _DELAY_UNIT_S[match[2]])


def describe(exc: ValidationError, limit: int = 3) -> str:
    """One line: each bad key's dotted path and its problem."""
    problems = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in error["loc"] if part != "from_") or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (misspelt, or not a field riskstream knows)"
        problems.append(f"{where}: {message}")
    more = exc.error_count() - limit
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping file; every problem is a :class:`MappingError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path.name} is not valid TOML: {exc}") from None
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(f"{path.name}: {describe(exc)}") from None
