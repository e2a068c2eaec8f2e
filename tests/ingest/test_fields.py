"""Column conversions of `riskstream data import`, on pyarrow arrays: exact values, and one
reason per refused row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from schemas.common import format_utc
from stream.ingest.errors import InputError
from stream.ingest.fields import (
    BAD_AMOUNT,
    BAD_TIME,
    DST,
    MISSING,
    UNMAPPED,
    Errors,
    amount_values,
    text_values,
    time_values,
    wire_times,
)
from stream.ingest.mapping import AmountField, TextField, TimeField


def utc_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_text_values_map_case_prefix_and_reasons() -> None:
    spec = TextField(column="mode", case="upper", values={"CHIP": "card", "ECOM": "ecommerce"})
    column = pa.array(["chip", "Ecom", None, "swipe"])
    errors: Errors = {}
    values = text_values("channel", spec, column, 4, errors, required=True, trim=False)
    assert values == ["card", "ecommerce", None, None]
    assert errors[2][0] == MISSING
    assert errors[3] == (
        UNMAPPED,
        "channel: 'SWIPE' (column 'mode') is not in the mapping's values",
    )


def test_text_values_other_prefix_trim_and_integers() -> None:
    errors: Errors = {}
    spec = TextField(column="kind", values={"ATM": "atm"}, other="merchant")
    assert text_values(
        "t", spec, pa.array(["ATM", "POS", None]), 3, errors, required=False, trim=False
    ) == [
        "atm",
        "merchant",
        None,
    ]
    prefixed = TextField(column="id", prefix="bank1-")
    assert text_values(
        "id", prefixed, pa.array([7, 42], pa.int64()), 2, errors, required=True, trim=False
    ) == [
        "bank1-7",
        "bank1-42",
    ]
    spaced = pa.array(["  A12 ", "   "])
    assert text_values(
        "id", TextField(column="id"), spaced, 2, errors, required=True, trim=True
    ) == ["A12", None]
    assert errors == {1: (MISSING, "id: no value in column 'id'")}
    with pytest.raises(InputError, match="holds double values"):
        text_values("id", TextField(column="id"), pa.array([1.5]), 1, {}, required=True, trim=False)


def test_a_constant_fills_every_row() -> None:
    spec = TextField(value="outbound")
    assert (
        text_values("direction", spec, None, 3, {}, required=True, trim=False) == ["outbound"] * 3
    )


def test_pattern_times_are_exact_and_impossible_dates_are_refused() -> None:
    # pyarrow's strptime reads 31/02 as 3 March; the converter must not.
    spec = TimeField(column="t", format="%d/%m/%Y %H:%M:%S", timezone="Europe/Paris")
    column = pa.array(["02/01/2026 09:15:00", "31/02/2026 10:00:00", "2/1/2026 9:15:00", None])
    errors: Errors = {}
    ms, has = time_values("event_time", spec, column, errors)
    assert ms[0] == utc_ms(2026, 1, 2, 8, 15)
    assert ms[2] == ms[0]  # unpadded fields: decided by Python's strptime, same instant
    assert errors[1] == (
        BAD_TIME,
        "event_time: '31/02/2026 10:00:00' does not match '%d/%m/%Y %H:%M:%S'",
    )
    assert errors[3][0] == MISSING
    assert has.tolist() == [True, False, True, False]


def test_local_times_across_daylight_saving_changes() -> None:
    column = pa.array(["2026-03-29 02:30:00", "2026-10-25 02:30:00", "2026-10-25 03:30:00"])
    strict = TimeField(column="t", format="%Y-%m-%d %H:%M:%S", timezone="Europe/Paris")
    errors: Errors = {}
    ms, _ = time_values("event_time", strict, column, errors)
    assert sorted(errors) == [0, 1]  # skipped, then repeated: both refused
    assert all(reason == DST for reason, _ in errors.values())
    assert ms[2] == utc_ms(2026, 10, 25, 2, 30)  # after the change: CET, UTC+1
    for choice, expected_hour in (("earliest", 0), ("latest", 1)):
        chosen = strict.model_copy(update={"dst": choice})
        ms, _ = time_values("event_time", chosen, column, errors := {})
        assert 1 not in errors
        assert ms[1] == utc_ms(2026, 10, 25, expected_hour, 30)


def test_iso_times_with_and_without_offsets() -> None:
    column = pa.array(["2026-01-02T03:04:05.123+01:00", "2026-01-02 03:04:05", "yesterday"])
    errors: Errors = {}
    ms, _ = time_values("t", TimeField(column="t", timezone="America/New_York"), column, errors)
    assert ms[0] == utc_ms(2026, 1, 2, 2, 4, 5) + 123
    assert ms[1] == utc_ms(2026, 1, 2, 8, 4, 5)
    assert errors == {2: (BAD_TIME, "t: 'yesterday' is not an ISO 8601 time")}
    ms, _ = time_values("t", TimeField(column="t"), pa.array(["2026-01-02 03:04:05"]), errors := {})
    assert errors[0][1] == "t: a time without a UTC offset, and the mapping gives no timezone"


def test_epoch_numbers_typed_timestamps_and_day_ends() -> None:
    errors: Errors = {}
    seconds = TimeField(column="t", format="epoch_seconds")
    ms, _ = time_values("t", seconds, pa.array([1767225600, 1e30]), errors)
    assert ms[0] == utc_ms(2026, 1, 1)
    assert errors[1][0] == BAD_TIME
    zoned = pa.array(
        [datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)], pa.timestamp("us", "UTC")
    )
    ms, _ = time_values("t", TimeField(column="t"), zoned, {})
    assert ms[0] == utc_ms(2026, 1, 1, 12) + 123  # microseconds truncated, as on the wire
    with pytest.raises(InputError, match="without a time zone"):
        time_values("t", TimeField(column="t"), pa.array([datetime(2026, 1, 1)]), {})
    day_end = TimeField(column="d", format="%Y-%m-%d", timezone="Europe/Paris", day_end=True)
    ms, _ = time_values("d", day_end, pa.array(["2026-01-15"]), {})
    assert format_utc(datetime.fromtimestamp(ms[0] / 1000, UTC)) == "2026-01-15T22:59:59.999Z"


def test_wire_times_match_the_wire_format() -> None:
    ms = np.array([utc_ms(2026, 1, 2, 3, 4, 5) + 7, utc_ms(2099, 12, 31, 23, 59, 59)], np.int64)
    assert wire_times(ms) == [
        format_utc(datetime.fromtimestamp(int(m) / 1000, UTC)) for m in ms.tolist()
    ]


@pytest.mark.parametrize(
    ("text", "unit", "separator", "currency", "expected"),
    [
        ("12.50", "major", ".", "EUR", 1250),
        ("12,5", "major", ",", "EUR", 1250),
        ("12.340", "major", ".", "EUR", 1234),  # a trailing zero is no extra precision
        ("1500", "major", ".", "JPY", 1500),
        ("1.234", "major", ".", "KWD", 1234),
        ("1234", "minor", ".", "EUR", 1234),
        ("1234.00", "minor", ".", "EUR", 1234),
    ],
)
def test_amounts_convert_exactly(
    text: str, unit: str, separator: str, currency: str, expected: int
) -> None:
    spec = AmountField(column="a", unit=unit, decimal_separator=separator)  # type: ignore[arg-type]
    errors: Errors = {}
    assert amount_values(spec, pa.array([text]), [currency], errors) == [expected]
    assert errors == {}


@pytest.mark.parametrize(
    ("text", "separator", "currency", "reason"),
    [
        ("12.345", ".", "EUR", "has more decimal places than EUR's 2"),
        ("12.5", ".", "JPY", "has more decimal places than JPY's 0"),
        (
            "1.234,56",
            ",",
            "EUR",
            "is not a plain decimal number (the mapping's decimal separator is ',')",
        ),
        ("1,234.56", ".", "EUR", "is not a plain decimal number"),
        (
            "-12.50",
            ".",
            "EUR",
            "is negative (amounts are positive; the direction field says which way it went)",
        ),
        ("12e3", ".", "EUR", "is not a plain decimal number"),
    ],
)
def test_amounts_that_would_need_rounding_or_guessing_are_refused(
    text: str, separator: str, currency: str, reason: str
) -> None:
    spec = AmountField(column="a", unit="major", decimal_separator=separator)  # type: ignore[arg-type]
    errors: Errors = {}
    assert amount_values(spec, pa.array([text]), [currency], errors) == [None]
    assert errors == {0: (BAD_AMOUNT, f"amount: {text!r} {reason}")}


def test_typed_amount_columns() -> None:
    major = AmountField(column="a", unit="major")
    floats = pa.array([12.3, 0.1, 12.345])
    errors: Errors = {}
    assert amount_values(major, floats, ["EUR"] * 3, errors) == [1230, 10, None]
    assert errors[2][0] == BAD_AMOUNT
    decimals = pa.array([Decimal("12.30"), Decimal("7.00")], pa.decimal128(10, 2))
    assert amount_values(major, decimals, ["USD", "USD"], {}) == [1230, 700]
    minor = AmountField(column="a", unit="minor")
    assert amount_values(minor, pa.array([1999, 5], pa.int64()), ["EUR", "EUR"], {}) == [1999, 5]
    errors = {}
    assert amount_values(minor, pa.array([12.5]), ["EUR"], errors) == [None]
    assert errors[0][1] == "amount: '12.5' has a fraction, but the mapping says minor units"
    errors = {}
    assert amount_values(major, pa.array(["5", None]), ["XXQ", "EUR"], errors) == [None, None]
    assert list(errors) == [1]  # an unknown currency is its own field's problem
