"""Hostile messages for the decoder and the running scorer, from one source of randomness.

Each generator takes a ``random.Random`` (hypothesis passes its own, shrinkable one through
``st.randoms()``; the pipeline test a seeded one, so CI sends the same messages every run) and
returns the bytes of one message. Most start from a valid event and break one thing about it;
some are not JSON at all. Every string the generators make up carries ``MARKER``, so a test
can check that no reason, log line or header ever echoes what a message said.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

MARKER = "§PAYLOAD§"
"""In every made-up string; never a valid identifier or field name, never 2-3 characters."""

_START = datetime(2026, 3, 1, tzinfo=UTC)
_REQUIRED = (
    "event_id", "event_time", "customer_id", "account_id", "channel", "direction",
    "amount_minor", "currency", "counterparty_id", "counterparty_type", "country",
)  # fmt: skip
_STRING_FIELDS = (
    "event_id", "customer_id", "account_id", "counterparty_id", "terminal_id", "mcc",
    "device_id", "ip_fingerprint", "memo", "currency", "country", "channel",
)  # fmt: skip


def valid_event(rng: random.Random, event_id: str) -> dict[str, Any]:
    """A valid event of one of a few dozen customers (so context builds up) at a random time."""
    customer = rng.randrange(40)
    when = _START + timedelta(seconds=rng.randrange(3 * 86_400))
    channel, counterparty, kind = rng.choice(
        [("card", "mer", "merchant"), ("wire", "acct", "account"), ("atm", "atm", "atm")]
    )
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id,
        "event_time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "customer_id": f"cus-h{customer:03d}",
        "account_id": f"acc-h{customer:03d}",
        "channel": channel,
        "direction": rng.choice(["inbound", "outbound"]),
        "amount_minor": rng.randrange(100, 5_000_000),
        "currency": rng.choice(["EUR", "USD", "GBP", "JPY"]),
        "counterparty_id": f"{counterparty}-{rng.randrange(500):04d}",
        "counterparty_type": kind,
        "country": rng.choice(["DE", "US", "GB", "NL", "PA"]),
    }
    if rng.random() < 0.5:
        event["memo"] = "invoice"
    return event


def _made_up_string(rng: random.Random, size: int | None = None) -> str:
    size = rng.choice([0, 1, 12, 300, 5000]) if size is None else size
    alphabet = "abc XYZ\n\t\"'\\\x00é漢\U0001f600{}[]:,"
    return (
        MARKER
        + "".join(rng.choice(alphabet) for _ in range(min(size, 2000)))
        + "x" * max(0, size - 2000)
    )


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, -(2**63), 2**63 - 1, rng.randrange(-(10**9), 10**9)])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e300, -1e-300, 12.34])
    if kind == "str":
        return _made_up_string(rng)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_made_up_string(rng, 4): _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _dumps(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def wrong_type(rng: random.Random, event: dict[str, Any]) -> bytes:
    event[rng.choice(sorted(event))] = _json_value(rng)
    return _dumps(event)


def missing_field(rng: random.Random, event: dict[str, Any]) -> bytes:
    for name in rng.sample(_REQUIRED, rng.randrange(1, 4)):
        event.pop(name, None)
    return _dumps(event)


def extra_field(rng: random.Random, event: dict[str, Any]) -> bytes:
    name = rng.choice([_made_up_string(rng, rng.choice([1, 50, 70_000])), "amount", "Amount_Minor"])
    event[name] = _json_value(rng)
    return _dumps(event)


def huge_string(rng: random.Random, event: dict[str, Any]) -> bytes:
    event[rng.choice(_STRING_FIELDS)] = _made_up_string(rng, rng.choice([129, 281, 4097, 70_000]))
    return _dumps(event)


def deep_nesting(rng: random.Random, event: dict[str, Any]) -> bytes:
    depth = rng.choice([10, 1000, 1025, 5000, 30_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"1" + closer * depth
    field = rng.choice(["memo", "amount_minor", MARKER])
    body = _dumps(event)[:-1]
    return body + b',"' + field.encode() + b'":' + nested + b"}"


def nan_or_infinity(rng: random.Random, event: dict[str, Any]) -> bytes:
    literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"nan", b"inf"])
    field = rng.choice(["amount_minor", "schema_version", "memo"])
    event[field] = "__SLOT__"
    return _dumps(event).replace(b'"__SLOT__"', literal)


def absurd_amount(rng: random.Random, event: dict[str, Any]) -> bytes:
    amount = rng.choice(
        [b"0", b"-1", b"-500000", b"100000000000001", b"9223372036854775808",
         b"18446744073709551621", b"1" + b"0" * 400, b"12.5", b"1e5", b'"1250"', b"true",
         b"-0", b"0x10"]
    )  # fmt: skip
    event["amount_minor"] = "__SLOT__"
    return _dumps(event).replace(b'"__SLOT__"', amount)


def bad_time(rng: random.Random, event: dict[str, Any]) -> bytes:
    event["event_time"] = rng.choice(
        [
            "2026-03-01T10:00:00",  # naive
            "2026-02-30T10:00:00Z",  # no such day
            "2026-03-01T24:00:01Z",
            "2026-03-01T23:59:60Z",  # leap second
            "2026-03-01T10:00:00+25:00",  # no such offset
            "2026-03-01T10:00:00+14:00",  # the largest real one: valid
            "2026-03-01T10:00:00-12:00",
            "2026-03-01T10:00:00.123456789Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",  # an unset clock
            "2026-03-01T10:00:00 Europe/Berlin",
            "2026-03-01T10:00:00UTC",
            "2026-03-01 10:00:00+01:00",
            "",
            _made_up_string(rng, 12),
            1772359200,  # epoch seconds, a number
            1772359200000.0,
        ]
    )
    return _dumps(event)


def random_bytes(rng: random.Random, _event: dict[str, Any]) -> bytes:
    return rng.randbytes(rng.choice([1, 7, 100, 4096]))


def invalid_utf8(rng: random.Random, event: dict[str, Any]) -> bytes:
    event["memo"] = "__SLOT__"
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"])
    return _dumps(event).replace(b"__SLOT__", MARKER.encode() + bad)


def lone_surrogate(rng: random.Random, event: dict[str, Any]) -> bytes:
    event["memo"] = "__SLOT__"
    return _dumps(event).replace(
        b"__SLOT__", MARKER.encode() + rng.choice([b"\\ud800", b"\\udfff"])
    )


def truncated(rng: random.Random, event: dict[str, Any]) -> bytes:
    raw = _dumps(event)
    return raw[: rng.randrange(1, len(raw) - 1)]


def not_an_object(rng: random.Random, event: dict[str, Any]) -> bytes:
    return rng.choice([orjson.dumps([event]), orjson.dumps(MARKER), b"42", b"null", b"true", b"[]"])


def duplicate_keys(rng: random.Random, event: dict[str, Any]) -> bytes:
    body = _dumps(event)[:-1]
    return body + b',"amount_minor":' + rng.choice([b"-5", b"7", b'"x"']) + b"}"


def control_characters(rng: random.Random, event: dict[str, Any]) -> bytes:
    event[rng.choice(["memo", "device_id", "event_id", "customer_id"])] = (
        MARKER + rng.choice(["\x00", "\n", "\r\n", "\x1b[31m", "\u2028", "\ufeff"]) + "x"
    )
    return _dumps(event)


Mutation = Callable[[random.Random, dict[str, Any]], bytes]

MUTATIONS: dict[str, Mutation] = {
    "wrong type": wrong_type,
    "missing field": missing_field,
    "extra field": extra_field,
    "huge string": huge_string,
    "deep nesting": deep_nesting,
    "NaN/Infinity": nan_or_infinity,
    "absurd amount": absurd_amount,
    "bad timestamp or zone": bad_time,
    "random bytes": random_bytes,
    "invalid UTF-8": invalid_utf8,
    "lone surrogate": lone_surrogate,
    "truncated": truncated,
    "not an object": not_an_object,
    "duplicate keys": duplicate_keys,
    "control characters": control_characters,
}


def hostile_message(rng: random.Random, event_id: str) -> tuple[str, bytes]:
    """(kind, bytes) of one hostile message built around a valid event with ``event_id``."""
    kind = rng.choice(sorted(MUTATIONS))
    return kind, MUTATIONS[kind](rng, valid_event(rng, event_id))


def crc32_twins(prefix: str, count: int, length: int = 48) -> list[str]:
    """``count`` distinct identifiers ``prefix`` + ``length`` letters a/b that share one CRC32.

    CRC32 is affine over GF(2) for messages of one length: flipping a set of positions changes
    the checksum by the XOR of what flipping each alone changes. Any combination of positions
    whose changes XOR to zero (the null space of ``length`` vectors of 32 bits) leaves the
    checksum as it was: what an attacker computes in milliseconds to make payees collide."""
    base = bytearray(prefix.encode() + b"a" * length)
    start = len(prefix)
    crc0 = zlib.crc32(bytes(base))
    changes = []
    for i in range(length):
        flipped = bytearray(base)
        flipped[start + i] = ord("b")
        changes.append(zlib.crc32(bytes(flipped)) ^ crc0)
    # Gaussian elimination, tracking which positions make up each reduced vector.
    pivots: dict[int, tuple[int, int]] = {}  # bit -> (vector, positions mask)
    null_space: list[int] = []
    for i, change in enumerate(changes):
        vector, mask = change, 1 << i
        for bit in range(31, -1, -1):
            if vector >> bit & 1 and bit in pivots:
                vector ^= pivots[bit][0]
                mask ^= pivots[bit][1]
        if vector == 0:
            null_space.append(mask)
        else:
            pivots[vector.bit_length() - 1] = (vector, mask)
    assert len(null_space) >= count
    twins = []
    for k in range(count):
        text = bytearray(base)
        mask = null_space[k] if k else 0  # the base itself, then one flip set each
        for i in range(length):
            if mask >> i & 1:
                text[start + i] = ord("b")
        twins.append(text.decode())
    assert len({zlib.crc32(t.encode()) for t in twins}) == 1
    return twins
