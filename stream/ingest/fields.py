"""Column conversions: a batch's source column -> one riskstream value per row, or a reason.

Each converter returns a list aligned with the batch (None where there is no value) and
records the first problem of a row in ``errors`` (row index -> (reason code, detail)); a row
with any problem is rejected whole. Work is vectorised with pyarrow where that is exact, and
done row by row in Python where it must be (amounts, so ``12.345`` EUR is refused rather
than rounded) or where pyarrow is lenient (its strptime reads 31/02 as 3 March: a value is
only taken from it when formatting it back gives the same text, and anything else is decided
by Python's own ``strptime``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from schemas.reference import CURRENCY_CODES, minor_unit_exponent
from stream.ingest.errors import InputError
from stream.ingest.mapping import EPOCH_FORMATS, ISO8601, AmountField, TextField, TimeField

Errors = dict[int, tuple[str, str]]
"""Row index in the batch -> (reason code, one-line detail)."""

MISSING: Final = "missing_value"
UNMAPPED: Final = "unmapped_value"
BAD_TIME: Final = "bad_timestamp"
DST: Final = "ambiguous_local_time"
BAD_AMOUNT: Final = "bad_amount"

_UTC_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
_MS: Final = timedelta(milliseconds=1)
_DAY_MS: Final = 86_400_000
_MAX_MS: Final = 10**15  # year 33658: anything beyond is not a time (the wire allows 2000-2100)
WIRE_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
"""With millisecond timestamps pyarrow writes %S as ``05.000``: RFC 3339 as `format_utc`."""


def _note(errors: Errors, index: int, code: str, detail: str) -> None:
    errors.setdefault(index, (code, detail))


def _as_text(name: str, column: str, array: pa.Array) -> list[str | None]:
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.cast(kind.value_type), kind.value_type
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    ):
        raise InputError(
            f"column {column!r} holds {kind} values: {name} needs text or whole numbers"
        )
    values: list[str | None] = pc.cast(array, pa.string()).to_pylist()
    return values


def text_values(
    name: str,
    spec: TextField,
    column: pa.Array | None,
    size: int,
    errors: Errors,
    *,
    required: bool,
    trim: bool,
) -> list[str | None]:
    """A text field: the constant, or the column through trim, case, value map and prefix."""
    if spec.value is not None:
        return [spec.value] * size
    assert spec.column is not None
    assert column is not None
    values = _as_text(name, spec.column, column)
    mapped, other, prefix = spec.values, spec.other, spec.prefix
    out: list[str | None] = [None] * size
    for index, value in enumerate(values):
        if value is not None and trim:
            value = value.strip() or None
        if value is None:
            if required:
                _note(errors, index, MISSING, f"{name}: no value in column {spec.column!r}")
            continue
        if spec.case == "upper":
            value = value.upper()
        elif spec.case == "lower":
            value = value.lower()
        if mapped is not None:
            target = mapped.get(value, other)
            if target is None:
                _note(
                    errors,
                    index,
                    UNMAPPED,
                    f"{name}: {value!r} (column {spec.column!r}) is not in the mapping's values",
                )
                continue
            value = target
        out[index] = prefix + value if prefix else value
    return out


# -- timestamps ---------------------------------------------------------------------------------


def time_values(
    name: str, spec: TimeField, column: pa.Array, errors: Errors, *, required: bool = True
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """(epoch milliseconds in UTC, whether the row has a time) per row. A row whose cell is
    empty has no time (and, when ``required``, an error); a row whose text is not a time has
    an error."""
    size = len(column)
    ms = np.zeros(size, dtype=np.int64)
    local = np.zeros(size, dtype=np.bool_)
    valid = np.zeros(size, dtype=np.bool_)
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        _from_arrow_times(spec, column, ms, local, valid)
    elif spec.format in EPOCH_FORMATS and (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
    ):
        _from_epoch(name, spec, column.to_pylist(), ms, valid, errors)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if spec.format == ISO8601:
            _from_iso(name, column.to_pylist(), ms, local, valid, errors)
        else:
            _from_pattern(name, spec, column, ms, local, valid, errors)
    elif not pa.types.is_null(kind):
        raise InputError(
            f"column {spec.column!r} holds {kind} values: {name} needs times (text, epoch "
            "numbers or a timestamp column)"
        )
    if required:
        for index in np.flatnonzero(~valid):
            _note(errors, int(index), MISSING, f"{name}: no value in column {spec.column!r}")
    if spec.day_end:
        _to_day_end(name, ms, local, valid, errors)
    if local.any():
        _localize(name, spec, ms, local & valid, errors)
    return ms, valid


def _present(column: pa.Array) -> NDArray[np.bool_]:
    """Rows whose cell holds a value (for optional times such as a label's)."""
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def wire_times(ms: NDArray[np.int64]) -> list[str]:
    """RFC 3339 UTC text with milliseconds and a Z, exactly as `schemas.common.format_utc`."""
    stamps = pa.array(ms, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    texts: list[str] = pc.strftime(stamps, format=WIRE_TIME_FORMAT).to_pylist()
    return texts


def _from_arrow_times(
    spec: TimeField,
    column: pa.Array,
    ms: NDArray[np.int64],
    local: NDArray[np.bool_],
    valid: NDArray[np.bool_],
) -> None:
    kind = column.type
    zoned = pa.types.is_timestamp(kind) and kind.tz is not None
    if not zoned and spec.timezone is None:
        raise InputError(
            f"column {spec.column!r} holds {kind} values without a time zone: set timezone "
            'in the mapping (e.g. timezone = "UTC")'
        )
    target = pa.timestamp("ms", tz="UTC") if zoned else pa.timestamp("ms")
    cast = pc.cast(column, target, safe=False)  # below a millisecond: truncated, as on the wire
    values = cast.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    ms[:] = values
    valid[:] = _present(column)
    local[:] = not zoned


def _from_epoch(
    name: str,
    spec: TimeField,
    values: list[object],
    ms: NDArray[np.int64],
    valid: NDArray[np.bool_],
    errors: Errors,
) -> None:
    scale = EPOCH_FORMATS[spec.format]
    for index, value in enumerate(values):
        if value is None:
            continue
        try:
            number = Decimal(value if isinstance(value, str) else repr(value))
            if not number.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            _note(errors, index, BAD_TIME, f"{name}: {value!r} is not a number ({spec.format})")
            continue
        if not abs(number * scale) < _MAX_MS:
            _note(errors, index, BAD_TIME, f"{name}: {value!r} is out of range ({spec.format})")
            continue
        ms[index] = int(number * scale)
        valid[index] = True


def _from_iso(
    name: str,
    values: list[str | None],
    ms: NDArray[np.int64],
    local: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    errors: Errors,
) -> None:
    for index, value in enumerate(values):
        if value is None:
            continue
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            _note(errors, index, BAD_TIME, f"{name}: {value!r} is not an ISO 8601 time")
            continue
        if moment.tzinfo is None:
            ms[index] = (moment - _NAIVE_EPOCH) // _MS
            local[index] = True
        else:
            ms[index] = (moment - _UTC_EPOCH) // _MS
        valid[index] = True


def _from_pattern(
    name: str,
    spec: TimeField,
    column: pa.Array,
    ms: NDArray[np.int64],
    local: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    errors: Errors,
) -> None:
    parsed = pc.strptime(column, format=spec.format, unit="s", error_is_null=True)
    exact = pc.fill_null(pc.equal(pc.strftime(parsed, format=spec.format), column), False)
    seconds = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    ok = np.asarray(exact.to_numpy(zero_copy_only=False), dtype=np.bool_)
    ms[ok] = seconds[ok] * 1000
    valid[ok] = True
    local[ok] = not spec.has_offset
    texts = column.to_pylist()
    for index in np.flatnonzero(~ok):
        value = texts[index]
        if value is None:
            continue
        try:
            moment = datetime.strptime(value, spec.format)
        except ValueError:
            _note(errors, int(index), BAD_TIME, f"{name}: {value!r} does not match {spec.format!r}")
            continue
        if moment.tzinfo is None:
            ms[index] = (moment - _NAIVE_EPOCH) // _MS
            local[index] = True
        else:
            ms[index] = (moment - _UTC_EPOCH) // _MS
            local[index] = False
        valid[index] = True


def _to_day_end(
    name: str,
    ms: NDArray[np.int64],
    local: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    errors: Errors,
) -> None:
    for index in np.flatnonzero(valid & (~local | (ms % _DAY_MS != 0))):
        _note(errors, int(index), BAD_TIME, f"{name}: day_end expects dates, got a time of day")
    dates = valid & local & (ms % _DAY_MS == 0)
    ms[dates] += _DAY_MS - 1


def _localize(
    name: str, spec: TimeField, ms: NDArray[np.int64], local: NDArray[np.bool_], errors: Errors
) -> None:
    rows = np.flatnonzero(local)
    if spec.timezone is None:
        for index in rows:
            _note(
                errors,
                int(index),
                BAD_TIME,
                f"{name}: a time without a UTC offset, and the mapping gives no timezone",
            )
        return
    wall = pa.array(ms[rows], type=pa.int64()).cast(pa.timestamp("ms"))

    def zoned(choice: str) -> NDArray[np.int64]:
        stamps = pc.assume_timezone(
            wall, timezone=spec.timezone, ambiguous=choice, nonexistent=choice
        )
        return np.asarray(stamps.cast(pa.int64()).to_numpy(zero_copy_only=False))

    earliest, latest = zoned("earliest"), zoned("latest")
    if spec.dst == "reject":
        for index in rows[earliest != latest]:
            when = (_NAIVE_EPOCH + timedelta(milliseconds=int(ms[index]))).isoformat(sep=" ")
            _note(
                errors,
                int(index),
                DST,
                f"{name}: {when} is ambiguous or skipped in {spec.timezone} (a daylight-saving "
                'change); set dst = "earliest" or "latest" to choose',
            )
    ms[rows] = latest if spec.dst == "latest" else earliest


# -- amounts ------------------------------------------------------------------------------------


def amount_values(
    spec: AmountField, column: pa.Array, currencies: list[str | None], errors: Errors
) -> list[int | None]:
    """Integer minor units per row. Nothing is rounded: a major amount with more decimals than
    its currency has (12.345 EUR) is a rejected row, as is a fractional minor amount."""
    kind = column.type
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    ):
        raise InputError(f"column {spec.column!r} holds {kind} values: the amount needs numbers")
    out: list[int | None] = [None] * len(column)
    for index, value in enumerate(column.to_pylist()):
        currency = currencies[index]
        if value is None:
            _note(errors, index, MISSING, f"amount: no value in column {spec.column!r}")
            continue
        if currency is None or currency not in CURRENCY_CODES:
            continue  # the currency's own check rejects the row
        text = repr(value) if isinstance(value, float) else str(value)
        result = _minor_units(text, spec, minor_unit_exponent(currency), currency)
        if isinstance(result, str):
            _note(errors, index, BAD_AMOUNT, f"amount: {text!r} {result}")
        else:
            out[index] = result
    return out


def _minor_units(text: str, spec: AmountField, exponent: int, currency: str) -> int | str:
    """Minor units of ``text``, or why it is not an amount."""
    if spec.decimal_separator == ",":
        if "." in text:
            return "is not a plain decimal number (the mapping's decimal separator is ',')"
        text = text.replace(",", ".", 1)
    if text.startswith("-"):
        return "is negative (amounts are positive; the direction field says which way it went)"
    whole, dot, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (
        dot and not (fraction.isascii() and fraction.isdigit())
    ):
        return "is not a plain decimal number"
    if spec.unit == "minor":
        if fraction.rstrip("0"):
            return "has a fraction, but the mapping says minor units"
        return int(whole)
    fraction = fraction.rstrip("0")
    if len(fraction) > exponent:
        return f"has more decimal places than {currency}'s {exponent}"
    scale: int = 10**exponent
    return int(whole) * scale + int(fraction.ljust(exponent, "0") or "0")
