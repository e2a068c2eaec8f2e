"""The strict wire format: RFC 3339 strings only, no duplicate keys, timestamps whose UTC form
exists; and, property-based, that timestamps with any offset and amounts of any size decode to
an event or a DecodeError - never another exception (a poison message in the scorer)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DecodeError, LabelEvent, TransactionEvent, decode
from schemas.codec import MAX_MESSAGE_BYTES, duplicate_key

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-000001",
    "event_time": "2026-03-01T10:15:00+02:00",
    "customer_id": "cust-42",
    "account_id": "acct-42-1",
    "channel": "wire",
    "direction": "outbound",
    "amount_minor": 985_000,
    "currency": "USD",
    "counterparty_id": "benef-7",
    "counterparty_type": "account",
    "country": "AE",
    "memo": "invoice 17",
}

PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def reason_of(raw: bytes) -> str:
    with pytest.raises(DecodeError) as caught:
        decode(TransactionEvent, raw)
    return caught.value.reason


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59-05:00",  # UTC is in year 10000
        "0001-01-01T00:00:00+05:00",  # UTC is in year 0
        "9999-12-31T23:59:59.999-00:01",
    ],
)
def test_regression_a_time_that_overflows_in_utc_crashed_the_decoder(when: str) -> None:
    # OverflowError escaped decode(): neither a validation nor a decode error, so the scorer
    # exited on the batch and died again on every restart (issue 16).
    reason = reason_of(orjson.dumps({**GOOD, "event_time": when}))
    assert "field 'event_time'" in reason
    assert "out of range" in reason


@pytest.mark.parametrize("when", ["1772359200", "1772359200000", "1772359200.5", "0"])
def test_digits_only_times_are_refused_not_read_as_unix_timestamps(when: str) -> None:
    reason = reason_of(orjson.dumps({**GOOD, "event_time": when}))
    assert "field 'event_time'" in reason
    assert "RFC 3339" in reason


@pytest.mark.parametrize(
    "when",
    [
        "2026-03-01T10:15:00Z",
        "2026-03-01T10:15:00.5Z",
        "2026-03-01t10:15:00.123z",  # RFC 3339 allows lower-case T and Z
        "2026-03-01T10:15:00+14:00",
        "2026-03-01T10:15:00-12:00",
    ],
)
def test_rfc3339_times_still_decode(when: str) -> None:
    event = decode(TransactionEvent, orjson.dumps({**GOOD, "event_time": when}))
    assert event.event_time.tzinfo is not None


@pytest.mark.parametrize(
    "when",
    [
        "2026-03-01 10:15:00Z",  # a space: allowed by ISO 8601 readers, not by the wire format
        "2026-03-01T10:15Z",  # no seconds
        "20260301T101500Z",  # basic format
        "2026-03-01T10:15:00+0200",  # offset without a colon
        "2026-W09-7T10:15:00Z",
    ],
)
def test_other_iso_8601_spellings_are_refused(when: str) -> None:
    assert "RFC 3339" in reason_of(orjson.dumps({**GOOD, "event_time": when}))


def test_labels_follow_the_same_time_rule() -> None:
    label = {
        "label_id": "lab-1",
        "event_id": "evt-1",
        "customer_id": "cust-1",
        "event_time": "1772359200",
        "label_time": "2026-03-02T00:00:00Z",
        "source": "analyst",
        "is_suspicious": False,
        "typology": "legitimate",
    }
    with pytest.raises(DecodeError, match="RFC 3339"):
        decode(LabelEvent, orjson.dumps(label))


# -- duplicate keys ----------------------------------------------------------------------------


def with_duplicate(raw: bytes, member: bytes) -> bytes:
    return raw[:-1] + b"," + member + b"}"


@pytest.mark.parametrize(
    "member",
    [
        b'"amount_minor":1',  # a second amount: one reader sees 985000, another 1
        b'"amount_minor" : 1',  # whitespace around the colon
        b'"amount_\\u006dinor":1',  # the same key spelled with an escape
        b'"memo":"a \\"quoted\\" note"',  # a duplicate in a message holding escapes
        b'"event_time":"2026-03-01T11:00:00Z"',  # colons inside the duplicate's value
    ],
)
def test_a_key_given_twice_is_refused(member: bytes) -> None:
    raw = with_duplicate(orjson.dumps(GOOD), member)
    reason = reason_of(raw)
    assert "duplicate key" in reason
    assert len(reason) < 200


def test_values_that_look_like_keys_are_not_duplicates() -> None:
    body = {**GOOD, "memo": 'amount_minor":1, "amount_minor": 2 \\ : : :', "event_id": "a:b:c"}
    event = decode(TransactionEvent, orjson.dumps(body))
    assert event.memo == body["memo"]


@pytest.mark.parametrize(
    ("text", "duplicate"),
    [
        (b'{"a":1,"b":{"a":2}}', None),  # the same name in two objects is fine
        (b'{"a":1,"b":{"c":2,"c":3}}', "c"),
        (b'{"a":[{"x":1},{"x":2,"x":3}]}', "x"),
        (b'{"a":"x:y","b":":"}', None),
        (b'{"a":"\\u003a","a":1}', "a"),
        (b'{"\\u0061":1,"a":2}', "a"),
    ],
)
def test_duplicate_key_finds_duplicates_at_any_depth(text: bytes, duplicate: str | None) -> None:
    assert duplicate_key(text, orjson.loads(text)) == duplicate


@PROPERTY
@given(
    data=st.dictionaries(
        st.text(alphabet='ab:"\\ é\n', max_size=4),
        st.recursive(
            st.none()
            | st.integers(-(2**63), 2**63 - 1)
            | st.text(alphabet='ab:"\\ é\n', max_size=6),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(alphabet='ab:"\\', max_size=3), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=6,
    ),
    repeat=st.booleans(),
    spaced=st.booleans(),
)
def test_duplicate_key_agrees_with_a_full_parse(
    data: dict[str, Any], repeat: bool, spaced: bool
) -> None:
    """Against json.loads with a pairs hook on the same text (the slow, exact answer)."""
    import json

    text = orjson.dumps(data)
    if repeat and data:
        name = next(iter(data))
        text = text[:-1] + b"," + orjson.dumps(name) + (b" : " if spaced else b":") + b"0}"
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [k for k, _ in pairs]
        found.extend(k for k in set(names) if names.count(k) > 1)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    assert (duplicate_key(text, orjson.loads(text)) is not None) == bool(found)


# -- anything goes in, an event or a DecodeError comes out -------------------------------------

offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1)  # what RFC 3339 can write: +-23:59


def rfc3339(moment: datetime, offset_minutes: int, fraction: str) -> str:
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{moment:%Y-%m-%dT%H:%M:%S}{fraction}{sign}{hours:02d}:{minutes:02d}"


@PROPERTY
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
    offset_minutes=offsets,
    fraction=st.sampled_from(["", ".5", ".123", ".123456", ".123456789"]),
)
def test_any_rfc3339_time_with_any_offset_decodes_or_is_refused_cleanly(
    moment: datetime, offset_minutes: int, fraction: str
) -> None:
    text = rfc3339(moment, offset_minutes, fraction)
    try:
        event = decode(TransactionEvent, orjson.dumps({**GOOD, "event_time": text}))
    except DecodeError as error:
        reason = error.reason
    else:
        reason = None
    if reason is not None:
        assert reason.startswith("field 'event_time'"), reason
        assert reason.isprintable()
        return
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    utc = moment.replace(tzinfo=UTC, microsecond=micros) - timedelta(minutes=offset_minutes)
    assert event.event_time == utc.replace(microsecond=micros // 1000 * 1000)
    assert 2000 <= event.event_time.year <= 2100


@PROPERTY
@given(
    amount=st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(alphabet="0123456789.-e", max_size=25),
    ),
    currency=st.sampled_from(["USD", "JPY", "KWD", "IRR", "CLF", "XPF", "EUR"]),
)
def test_any_amount_decodes_within_bounds_or_is_refused_cleanly(
    amount: object, currency: str
) -> None:
    literal = orjson.dumps(amount) if not isinstance(amount, int) else str(amount).encode()
    raw = orjson.dumps({**GOOD, "amount_minor": "__AMOUNT__", "currency": currency})
    raw = raw.replace(b'"__AMOUNT__"', literal)
    try:
        event = decode(TransactionEvent, raw)
    except DecodeError as error:
        reason = error.reason
    else:
        reason = None
    if reason is not None:
        assert "amount_minor" in reason
        return
    assert isinstance(amount, int)
    assert 0 < event.amount_minor <= 10**14


@PROPERTY
@given(rng=st.randoms(use_true_random=False), size=st.integers(1, 300))
def test_random_key_order_and_spacing_never_breaks_a_valid_event(
    rng: random.Random, size: int
) -> None:
    """The duplicate check must not refuse valid events however they are laid out."""
    items = list(GOOD.items())
    rng.shuffle(items)
    pad = " " * (size % 4)
    body = ("{" + pad + ("," + pad).join(
        f"{orjson.dumps(k).decode()}{pad}:{pad}{orjson.dumps(v).decode()}" for k, v in items
    ) + pad + "}").encode()  # fmt: skip
    assert len(body) < MAX_MESSAGE_BYTES
    assert decode(TransactionEvent, body).event_id == GOOD["event_id"]
