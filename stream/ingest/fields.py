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


def _note(errors: Errors, index: int, code: str, detail: str) -> None:
    errors.setdefault(index, (code, detail))


def _as_text(name: str, column: str, array: pa.Array) -> pa.Array:
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
    return pc.cast(array, pa.string())


def _rows(mask: pa.Array) -> NDArray[np.intp]:
    return np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=np.bool_))


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
    """A text field: the constant, or the column through trim, case, value map and prefix
    (vectorised; only rows with a problem are looked at one by one)."""
    if spec.value is not None:
        return [spec.value] * size
    assert spec.column is not None
    assert column is not None
    text = _as_text(name, spec.column, column)
    if trim:
        text = pc.utf8_trim_whitespace(text)
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    if spec.case is not None:
        text = pc.utf8_upper(text) if spec.case == "upper" else pc.utf8_lower(text)
    source = text
    if spec.values is not None:
        keys = pa.array(list(spec.values), type=pa.string())
        targets = pa.array(list(spec.values.values()), type=pa.string())
        text = targets.take(pc.index_in(source, value_set=keys))
        if spec.other is not None:
            text = pc.fill_null(text, spec.other)
        text = pc.if_else(pc.is_valid(source), text, pa.scalar(None, pa.string()))
        if text.null_count > source.null_count:
            sources = source.to_pylist()
            for index in _rows(pc.and_(pc.is_null(text), pc.is_valid(source))):
                _note(
                    errors,
                    int(index),
                    UNMAPPED,
                    f"{name}: {sources[index]!r} (column {spec.column!r}) is not in the "
                    "mapping's values",
                )
    if spec.prefix:
        text = pc.binary_join_element_wise(spec.prefix, text, "")
    if required and source.null_count:
        for index in _rows(pc.is_null(source)):
            _note(errors, int(index), MISSING, f"{name}: no value in column {spec.column!r}")
    values: list[str | None] = text.to_pylist()
    return values


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
    """RFC 3339 UTC text with milliseconds and a Z, exactly as `schemas.common.format_utc`
    writes it (for years 1000-9999; the wire format accepts 2000-2100)."""
    texts = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()
    return [text + "Z" for text in texts]


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
    its currency has (12.345 EUR) is a rejected row, as is a fractional minor amount.

    Text columns take a vectorised path for the plain ``digits[.digits]`` form, per run of
    rows sharing a currency exponent; every other row (and every typed numeric column) is
    decided by :func:`_minor_units`, which also words the reasons."""
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
    size = len(column)
    out: list[int | None] = [None] * size
    exponents = np.array(
        [minor_unit_exponent(c) if c in CURRENCY_CODES else -1 for c in currencies],
        dtype=np.int64,
    )
    done = np.zeros(size, dtype=np.bool_)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        _plain_amounts(spec, column, exponents, out, done)
    values = column.to_pylist() if not done.all() else []
    for index in np.flatnonzero(~done):
        value, exponent = values[index], int(exponents[index])
        if value is None:
            _note(errors, int(index), MISSING, f"amount: no value in column {spec.column!r}")
            continue
        if exponent < 0:
            continue  # an unknown or missing currency: its own check rejects the row
        text = repr(value) if isinstance(value, float) else str(value)
        result = _minor_units(text, spec, exponent, str(currencies[index]))
        if isinstance(result, str):
            _note(errors, int(index), BAD_AMOUNT, f"amount: {text!r} {result}")
        else:
            out[index] = result
    return out


def _plain_amounts(
    spec: AmountField,
    column: pa.Array,
    exponents: NDArray[np.int64],
    out: list[int | None],
    done: NDArray[np.bool_],
) -> None:
    text = column
    if spec.decimal_separator == ",":
        text = pc.if_else(
            pc.match_substring(text, "."),
            pa.scalar(None, pa.string()),
            pc.replace_substring(text, ",", ".", max_replacements=1),
        )
    # at most 15 whole digits: int64 arithmetic below cannot overflow
    parts = pc.extract_regex(text, r"^(?P<whole>[0-9]{1,15})(?:\.(?P<frac>[0-9]*))?$")
    plain = np.asarray(parts.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    whole = pc.cast(pc.if_else(parts.is_valid(), parts.field("whole"), "0"), pa.int64())
    fraction = pc.utf8_rtrim(pc.fill_null(parts.field("frac"), ""), characters="0")
    digits = np.asarray(pc.utf8_length(fraction).to_numpy(zero_copy_only=False))
    wholes = np.asarray(whole.to_numpy(zero_copy_only=False))
    for exponent in np.unique(exponents[plain]):
        if exponent < 0:
            continue
        if spec.unit == "minor":
            rows = plain & (exponents == exponent) & (digits == 0)
            values = wholes
        else:
            rows = plain & (exponents == exponent) & (digits <= exponent)
            padded = pc.utf8_rpad(fraction, width=int(exponent), padding="0")
            cents = pc.cast(pc.if_else(pc.equal(padded, ""), "0", padded), pa.int64())
            values = wholes * 10 ** int(exponent) + np.asarray(cents.to_numpy(zero_copy_only=False))
        for index, value in zip(np.flatnonzero(rows).tolist(), values[rows].tolist(), strict=True):
            out[index] = value
        done |= rows


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
