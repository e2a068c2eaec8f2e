"""Strict decoding of wire messages: good events pass, each kind of bad input is rejected with
an error that names the problem and keeps the original bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas import (
    MAX_MESSAGE_BYTES,
    Alert,
    DecodeError,
    LabelEvent,
    TransactionEvent,
    Typology,
    alert_id_for,
    decode,
    encode,
)

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-000001",
    "event_time": "2026-03-01T10:15:00+02:00",
    "customer_id": "cust-42",
    "account_id": "acct-42-1",
    "customer_segment": "retail",
    "channel": "wire",
    "direction": "outbound",
    "amount_minor": 985_000,
    "currency": "USD",
    "counterparty_id": "benef-7",
    "counterparty_type": "account",
    "country": "AE",
    "device_id": "dev-ab12",
    "memo": "invoice 17",
}


def raw(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_a_valid_event_decodes_and_is_normalised_to_utc() -> None:
    event = decode(TransactionEvent, raw())
    assert event.event_time == datetime(2026, 3, 1, 8, 15, tzinfo=UTC)
    assert event.amount_minor == 985_000
    assert event.amount_major == 9850.0


def test_encode_then_decode_is_the_identity() -> None:
    event = decode(TransactionEvent, raw())
    assert decode(TransactionEvent, encode(event)) == event
    assert b'"event_time":"2026-03-01T08:15:00.000Z"' in encode(event)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"amount_minor": ...}, "field 'amount_minor': Field required"),
        ({"amount_minor": "985000"}, "field 'amount_minor': Input should be a valid integer"),
        ({"amount_minor": 12.5}, "field 'amount_minor': Input should be a valid integer"),
        ({"amount_minor": True}, "field 'amount_minor': Input should be a valid integer"),
        ({"amount_minor": -1}, "field 'amount_minor': Input should be greater than 0"),
        ({"amount_minor": 0}, "field 'amount_minor': Input should be greater than 0"),
        ({"amount_minor": 10**15}, "field 'amount_minor': Input should be less than or equal"),
        ({"currency": "ABC"}, "unknown ISO 4217 currency code 'ABC'"),
        ({"currency": "usd"}, "field 'currency'"),
        ({"country": "XX"}, "unknown ISO 3166-1 alpha-2 country code 'XX'"),
        ({"memo": "x" * 1000}, "field 'memo': String should have at most 280 characters"),
        ({"surprise": 1}, "field 'surprise': Extra inputs are not permitted"),
        (
            {"event_time": "2026-03-01T10:15:00"},
            "field 'event_time': Value error, must be an RFC 3339",
        ),
        ({"event_time": "2026-13-01T10:15:00Z"}, "field 'event_time'"),
        ({"event_time": "2026-03-01T10:15:00+25:00"}, "field 'event_time'"),
        ({"event_time": "1970-01-01T00:00:00Z"}, "year 1970 is outside"),
        ({"channel": "telepathy"}, "field 'channel'"),
        ({"event_id": ""}, "field 'event_id'"),
        ({"event_id": "a b"}, "field 'event_id'"),
        ({"schema_version": 2}, "field 'schema_version'"),
        ({"mcc": "59x1"}, "field 'mcc'"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_named(
    changes: dict[str, Any], expected: str
) -> None:
    message = raw(**changes)
    with pytest.raises(DecodeError) as caught:
        decode(TransactionEvent, message)
    assert expected in caught.value.reason
    assert caught.value.raw == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"not json at all", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (raw().replace(b"985000", b"NaN"), "not valid JSON"),
        (raw().replace(b"985000", b"Infinity"), "not valid JSON"),
        (raw().replace(b"985000", b"1e999"), "not valid JSON"),
        (b"[1, 2, 3]", "expected a JSON object, got list"),
        (b'"a string"', "expected a JSON object, got str"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (raw(memo="m" * (1 << 20)), f"over the {MAX_MESSAGE_BYTES}-byte limit"),
    ],
)
def test_malformed_messages_are_rejected(message: bytes | None, expected: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(TransactionEvent, message)
    assert expected in caught.value.reason
    assert caught.value.raw == message


def test_error_messages_never_echo_the_payload() -> None:
    secret_memo = "card 4111111111111111 pin 1234"
    with pytest.raises(DecodeError) as caught:
        decode(TransactionEvent, raw(memo=secret_memo, amount_minor=-3))
    assert "4111" not in str(caught.value)


def label(**changes: Any) -> bytes:
    body = {
        "label_id": "lbl-1",
        "event_id": "evt-000001",
        "customer_id": "cust-42",
        "event_time": "2026-03-01T08:15:00Z",
        "label_time": "2026-03-20T00:00:00Z",
        "source": "chargeback",
        "is_suspicious": True,
        "typology": "account_takeover",
        **changes,
    }
    return orjson.dumps(body)


def test_labels_decode_and_reject_inconsistent_verdicts() -> None:
    assert decode(LabelEvent, label()).typology is Typology.ACCOUNT_TAKEOVER
    with pytest.raises(DecodeError, match="typology must be 'legitimate'"):
        decode(LabelEvent, label(is_suspicious=False))
    with pytest.raises(DecodeError, match="label_time is before event_time"):
        decode(LabelEvent, label(label_time="2026-02-01T00:00:00Z"))


def test_alert_ids_are_deterministic_per_event_and_model_version() -> None:
    assert alert_id_for("e1", "m1") == alert_id_for("e1", "m1")
    assert alert_id_for("e1", "m1") != alert_id_for("e1", "m2")
    assert alert_id_for("e1", "m1") != alert_id_for("e2", "m1")


def test_alerts_round_trip() -> None:
    event = decode(TransactionEvent, raw())
    now = datetime(2026, 3, 1, 8, 15, 1, tzinfo=UTC)
    alert = Alert(
        alert_id=alert_id_for(event.event_id, "v1"),
        mode="live",
        event=event,
        score=0.93,
        threshold=0.7,
        typology=Typology.ACCOUNT_TAKEOVER,
        typology_probability=0.8,
        reasons=[],
        narrative="outbound wire; amount very large",
        model_version="v1",
        narrative_version="n1",
        event_time=event.event_time,
        received_at=now,
        scored_at=now,
        emitted_at=now,
    )
    assert decode(Alert, encode(alert)) == alert


def test_timestamps_keep_milliseconds_so_an_event_equals_its_own_re_encoding() -> None:
    event = decode(TransactionEvent, raw(event_time="2026-03-01T10:15:00.123456+02:00"))
    assert event.event_time == datetime(2026, 3, 1, 8, 15, 0, 123000, tzinfo=UTC)
    assert decode(TransactionEvent, encode(event)) == event
