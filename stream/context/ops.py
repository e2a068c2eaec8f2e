"""Pure translation of events and labels into the packed ops the Lua scripts read.

No Redis here: everything an op needs is derived from the event alone, so it is unit-testable
and identical in live traffic and replays. The byte layouts are the contract with
customer.lua, counterparty.lua and labels.lua (little-endian ``struct`` formats).
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final, NamedTuple

from schemas.common import Channel, Direction
from schemas.features import CHANNEL_CODES, COUNTERPARTY_TYPE_CODES
from schemas.label import LabelEvent
from schemas.reference import (
    HIGH_RISK_COUNTRIES,
    RISKY_MCCS,
    SMALL_AMOUNT_USD,
    amount_usd,
    is_near_threshold_usd,
)
from schemas.story import event_kind
from schemas.transaction import TransactionEvent

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

# t_ms, amount in whole US cents, flags, counterparty hash, device hash, country code, kind byte
# (story.event_kind), event-id hash
_CUSTOMER_HEAD: Final = struct.Struct("<ddHIIHB8s")
_COUNTERPARTY_HEAD: Final = struct.Struct("<d8s")
_LENGTH: Final = struct.Struct("<H")
_LABEL_TIMES: Final = struct.Struct("<dd")
CONFIG: Final = struct.Struct("<dddddddddddd")  # see ContextStore._event_config, common.lua


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // _ONE_MS


# The key of the hashes below when ``context.hash_key`` is not set: public, so fine for
# development and tests only (the scorer warns when it runs with it).
DEVELOPMENT_HASH_KEY: Final = b"riskstream development hash key"

# The largest amount, in whole US cents, an event adds to any sum: $100 billion, above any real
# payment (Fedwire's largest is $9,999,999,999.99) and far below what the sums hold exactly
# (doubles: 2^53 cents; a day's total in the customer's ring: 2^47 - 1 cents, saturating). The
# wire format bounds amount_minor per currency; this bounds it after conversion, where a
# currency missing from the rate table (1 USD a unit) could otherwise make 10^14 units worth
# $10^14. An event above it keeps its amount everywhere else (alert, scored record).
MAX_CONTEXT_CENTS: Final = 10**13


@lru_cache(maxsize=8)
def _keyed(key: bytes, size: int) -> hashlib.blake2b:
    # BLAKE2b takes keys of up to 64 bytes; a longer secret is hashed down to 64, not cut.
    key = key if len(key) <= 64 else hashlib.blake2b(key).digest()
    return hashlib.blake2b(key=key, digest_size=size)


def keyed_hash32(data: bytes, key: bytes) -> int:
    """Keyed 32-bit hash (BLAKE2b) naming a counterparty or device in a customer's windows;
    never 0 (0 = none). Keyed so that ids chosen to collide - trivial to find for CRC32, or
    for any unkeyed 32-bit hash by brute force - collide only by chance under a secret key:
    six new payees cannot be made to count as one."""
    hasher = _keyed(key, 4).copy()
    hasher.update(data)
    return int.from_bytes(hasher.digest(), "little") or 1


def event_id_hash(event_id: str, key: bytes = DEVELOPMENT_HASH_KEY) -> bytes:
    """8 bytes naming an event in the dedupe memory (keyed: two ids made to collide would
    make the second one's payment invisible to its entities; by chance, a collision needs
    ~2^32 events of one entity within its dedupe span, which holds at most a few thousand)."""
    hasher = _keyed(key, 8).copy()
    hasher.update(event_id.encode())
    return hasher.digest()


class EventOps(NamedTuple):
    """What one event contributes: its own features and an op for each entity it touches."""

    event_part: tuple[float, ...]
    time_s: int
    """Event time in whole seconds (the story's clock)."""
    counterparty_hash: int
    """The hash the customer's story remembers the counterparty by."""
    customer_op: bytes
    counterparty_op: bytes
    """For the counterparty entity: the card terminal if the event names one, else the
    counterparty (see ``counterparty_entity``)."""


def _channel_facts(channel: Channel, direction: Direction) -> tuple[int, float, float, bool]:
    """Flags, is_outbound, channel code and cash-in of a (channel, direction) pair."""
    outbound = direction is Direction.OUTBOUND
    cash_in = channel is Channel.CASH and not outbound
    flags = F_OUTBOUND if outbound else 0
    if channel is Channel.ECOMMERCE:
        flags |= F_ECOMMERCE
    if cash_in:
        flags |= F_CASH_IN
    if channel in _TRANSFER_CHANNELS:
        flags |= F_TRANSFER
    return flags, 1.0 if outbound else 0.0, float(CHANNEL_CODES[channel]), cash_in


# Everything that depends only on a small enumerable input is computed once (event_ops runs
# for every event: a few microseconds saved here are a tenth of the per-event budget).
_CHANNEL_FACTS: Final = {(c, d): _channel_facts(c, d) for c in Channel for d in Direction}
_TYPE_CODES: Final = {kind: float(code) for kind, code in COUNTERPARTY_TYPE_CODES.items()}
_country_facts: dict[str, tuple[int, bytes, float]] = {}


def _country(country: str) -> tuple[int, bytes, float]:
    """(16-bit code, length-prefixed first-seen field, is high-risk) of a country code."""
    facts = _country_facts.get(country)
    if facts is None:
        field = b"k" + country.encode()
        facts = (
            (ord(country[0]) << 8) | ord(country[1]),
            _LENGTH.pack(len(field)) + field,
            1.0 if country in HIGH_RISK_COUNTRIES else 0.0,
        )
        _country_facts[country] = facts
    return facts


_NO_DEVICE: Final = _LENGTH.pack(0)


def event_ops(event: TransactionEvent, key: bytes = DEVELOPMENT_HASH_KEY) -> EventOps:
    """Pack ``event`` for the scripts and compute the features it carries by itself; ``key``
    keys the hashes (``context.hash_key``; fixed within a namespace)."""
    moment = event.event_time
    t_ms = float(epoch_ms(moment))
    usd = min(amount_usd(event.amount_minor, event.currency), MAX_CONTEXT_CENTS / 100)
    flags, is_outbound, channel_code, cash_in = _CHANNEL_FACTS[(event.channel, event.direction)]
    mcc = event.mcc
    risky = mcc is not None and mcc in RISKY_MCCS
    near = cash_in and is_near_threshold_usd(usd)
    if usd <= SMALL_AMOUNT_USD:
        flags |= F_SMALL
    if risky:
        flags |= F_RISKY_MCC
    if near:
        flags |= F_NEAR_THRESHOLD

    country_code, country_field, high_risk = _country(event.country)
    device = event.device_id
    cp = event.counterparty_id.encode()
    idh = event_id_hash(event.event_id, key)
    if device:
        device_field = b"d" + device.encode()
        device_part = _LENGTH.pack(len(device_field)) + device_field
        device_hash = keyed_hash32(device_field, key)
    else:
        device_part, device_hash = _NO_DEVICE, 0
    cp_hash = keyed_hash32(cp, key)
    type_code = _TYPE_CODES[event.counterparty_type]
    # Field names of the first-seen hash are built here, where it is cheaper than in Lua.
    customer_op = b"".join(
        (
            _CUSTOMER_HEAD.pack(
                t_ms,
                float(round(usd * 100)),
                flags,
                cp_hash,
                device_hash,
                country_code,
                event_kind(int(channel_code), is_outbound == 1.0, int(type_code), high_risk == 1.0),
                idh,
            ),
            _LENGTH.pack(len(cp) + 1),
            b"p",
            cp,
            country_field,
            device_part,
        )
    )
    customer = event.customer_id.encode()
    counterparty_op = b"".join(
        (_COUNTERPARTY_HEAD.pack(t_ms, idh), _LENGTH.pack(len(customer)), customer)
    )
    event_part = (
        usd,
        is_outbound,
        channel_code,
        type_code,
        1.0 if risky else 0.0,
        high_risk,
        1.0 if near else 0.0,
        float(moment.hour),
        1.0 if moment.weekday() >= 5 else 0.0,
        0.0 if event.terminal_id is None else 1.0,
    )
    return EventOps(event_part, int(t_ms // 1000), cp_hash, customer_op, counterparty_op)


def counterparty_entity(terminal_id: str | None, counterparty_id: str) -> tuple[str, str]:
    """(key kind, id) of the counterparty entity: the card terminal when one is named - the
    unit a skimmer compromises, and what a chargeback's terminal id points at - else the
    counterparty. One entity per event keeps a batch's Redis work at two ops per event."""
    if terminal_id is not None:
        return "t", terminal_id
    return "p", counterparty_id


def label_op(label: LabelEvent) -> bytes:
    """The labels.lua op: label time, then the member (event time and event id)."""
    return (
        _LABEL_TIMES.pack(float(epoch_ms(label.label_time)), float(epoch_ms(label.event_time)))
        + label.event_id.encode()
    )
