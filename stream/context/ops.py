"""Pure translation of events and labels into the packed ops the Lua scripts read.

No Redis here: everything an op needs is derived from the event alone, so it is unit-testable
and identical in live traffic and replays. The byte layouts are the contract with
customer.lua, counterparty.lua and labels.lua (little-endian ``struct`` formats).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from schemas.common import Channel, Direction
from schemas.label import LabelEvent
from schemas.transaction import TransactionEvent
from stream.context.features import CHANNEL_CODES, COUNTERPARTY_TYPE_CODES
from stream.context.reference import (
    HIGH_RISK_COUNTRIES,
    RISKY_MCCS,
    SMALL_AMOUNT_USD,
    amount_usd,
    is_near_threshold_usd,
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

# Flag bits of a customer op (customer.lua adds bit 8, "counterparty new", to its log).
F_OUTBOUND: Final = 1
F_SMALL: Final = 2
F_ECOMMERCE: Final = 4
F_RISKY_MCC: Final = 8
F_CASH_IN: Final = 16
F_NEAR_THRESHOLD: Final = 32
F_TRANSFER: Final = 64

_TRANSFER_CHANNELS: Final = frozenset({Channel.WIRE, Channel.ACH, Channel.P2P, Channel.CRYPTO})

# t_ms, amount_usd, flags, counterparty hash, device hash, country code, event-id hash
_CUSTOMER_HEAD: Final = struct.Struct("<ddHIIH8s")
_COUNTERPARTY_HEAD: Final = struct.Struct("<d8s")
_LENGTH: Final = struct.Struct("<H")
_LABEL_TIMES: Final = struct.Struct("<dd")
CONFIG: Final = struct.Struct("<dddddddddd")


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // _ONE_MS


def event_id_hash(event_id: str) -> bytes:
    """8 bytes naming an event in the dedupe memory (a collision needs ~2^32 events of one
    entity within its dedupe span; the span holds at most a few thousand)."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


def short_hash(value: str) -> int:
    """32-bit hash for distinct counts within one customer's last day (never 0: 0 = none)."""
    return zlib.crc32(value.encode()) or 1


def _with_length(raw: bytes) -> bytes:
    return _LENGTH.pack(len(raw)) + raw


@dataclass(frozen=True, slots=True)
class EventOps:
    """What one event contributes: its own features and one op per entity it touches."""

    event_part: tuple[float, ...]
    customer_op: bytes
    counterparty_op: bytes
    terminal_op: bytes | None


def event_ops(event: TransactionEvent) -> EventOps:
    """Pack ``event`` for the scripts and compute the features it carries by itself."""
    moment = event.event_time
    t_ms = float(epoch_ms(moment))
    usd = amount_usd(event.amount_minor, event.currency)
    channel = event.channel
    outbound = event.direction is Direction.OUTBOUND
    risky = event.mcc is not None and event.mcc in RISKY_MCCS
    cash_in = channel is Channel.CASH and not outbound
    near = cash_in and is_near_threshold_usd(usd)

    flags = F_OUTBOUND if outbound else 0
    if usd <= SMALL_AMOUNT_USD:
        flags |= F_SMALL
    if channel is Channel.ECOMMERCE:
        flags |= F_ECOMMERCE
    if risky:
        flags |= F_RISKY_MCC
    if cash_in:
        flags |= F_CASH_IN
    if near:
        flags |= F_NEAR_THRESHOLD
    if channel in _TRANSFER_CHANNELS:
        flags |= F_TRANSFER

    country = event.country
    device = event.device_id or ""
    cp = event.counterparty_id.encode()
    idh = event_id_hash(event.event_id)
    # Field names of the first-seen hash are built here, where it is cheaper than in Lua.
    customer_op = b"".join(
        (
            _CUSTOMER_HEAD.pack(
                t_ms,
                usd,
                flags,
                zlib.crc32(cp) or 1,
                short_hash(device) if device else 0,
                (ord(country[0]) << 8) | ord(country[1]),
                idh,
            ),
            _with_length(b"p" + cp),
            _with_length(b"k" + country.encode()),
            _with_length(b"d" + device.encode() if device else b""),
        )
    )
    customer_tail = _with_length(event.customer_id.encode())
    counterparty_op = _COUNTERPARTY_HEAD.pack(t_ms, idh) + customer_tail
    terminal_op = counterparty_op if event.terminal_id is not None else None

    event_part = (
        usd,
        1.0 if outbound else 0.0,
        float(CHANNEL_CODES[channel]),
        float(COUNTERPARTY_TYPE_CODES[event.counterparty_type]),
        1.0 if risky else 0.0,
        1.0 if country in HIGH_RISK_COUNTRIES else 0.0,
        1.0 if near else 0.0,
        float(moment.hour),
        1.0 if moment.weekday() >= 5 else 0.0,
    )
    return EventOps(event_part, customer_op, counterparty_op, terminal_op)


def label_op(label: LabelEvent) -> bytes:
    """The labels.lua op: label time, then the member (event time and event id)."""
    return (
        _LABEL_TIMES.pack(float(epoch_ms(label.label_time)), float(epoch_ms(label.event_time)))
        + label.event_id.encode()
    )
