"""The customer's story: the events before this one, as customer.lua remembers them.

customer.lua keeps each customer's last ``story_events`` events by event time and returns,
with every event, the remembered ones before it (oldest first, fixed-size entries; see the
script). This module is the pure Python side: the kind byte the op carries for each event,
decoding the returned entries newest first, and the numeric summaries of the story that the
GBDT and the hybrid model's numeric path read (the narrative tells the entries themselves).
Never raw ids: an entry knows only whether its counterparty is the current event's, or an
earlier entry's.
"""

from __future__ import annotations

import math
import struct
from itertools import chain, pairwise
from typing import Final, NamedTuple

from schemas.reference import SMALL_AMOUNT_USD

ENTRY: Final = struct.Struct("<IHbBBI")
"""time (s), amount (log2(1 + USD) in 1/2048), z-score (quarters), kind, novelty, cp hash."""

# kind byte (ops.py packs it into the customer op)
_CHANNEL_MASK: Final = 0x07
_OUTBOUND: Final = 0x08
_TYPE_SHIFT: Final = 4
_TYPE_MASK: Final = 0x07
_HIGH_RISK: Final = 0x80
# novelty byte (customer.lua)
_CP_NEW, _DEVICE_NEW, _COUNTRY_NEW, _LATE = 1, 2, 4, 8
_NOVELTY_BITS: Final = _CP_NEW | _DEVICE_NEW | _COUNTRY_NEW | _LATE
# the packed form (``pack_story``): the novelty byte, with two bits of its own
_PACKED: Final = struct.Struct("<IHbBB")
_SAME, _REPEAT = 16, 32


def event_kind(
    channel_code: int, outbound: bool, counterparty_type_code: int, high_risk: bool
) -> int:
    """The kind byte of an event: channel, direction, counterparty type, high-risk country."""
    return (
        (channel_code & _CHANNEL_MASK)
        | (_OUTBOUND if outbound else 0)
        | ((counterparty_type_code & _TYPE_MASK) << _TYPE_SHIFT)
        | (_HIGH_RISK if high_risk else 0)
    )


class StoryEntry(NamedTuple):
    """One earlier event of the customer, as the story tells it."""

    seconds_before: int
    """How long before the current event (0: at the same second, arrived earlier)."""
    amount_usd: float
    """Within 0.04 % (a logarithmic step)."""
    zscore: float
    """Its amount against the customer's usual in its direction, at its time (quarters)."""
    channel_code: int
    outbound: bool
    counterparty_type_code: int
    high_risk_country: bool
    counterparty_new: bool
    device_new: bool
    country_new: bool
    late: bool
    same_counterparty: bool
    """Its counterparty is the current event's."""
    repeat_counterparty: bool
    """Its counterparty is that of an even earlier entry of the story."""


def _kind_fields(kind: int) -> tuple[int, bool, int, bool]:
    return (
        kind & _CHANNEL_MASK,
        bool(kind & _OUTBOUND),
        (kind >> _TYPE_SHIFT) & _TYPE_MASK,
        bool(kind & _HIGH_RISK),
    )


def _novelty_fields(novelty: int) -> tuple[bool, bool, bool, bool]:
    return (
        bool(novelty & _CP_NEW),
        bool(novelty & _DEVICE_NEW),
        bool(novelty & _COUNTRY_NEW),
        bool(novelty & _LATE),
    )


# Decoding is on the hot path (16 entries for nearly every event): everything an entry's
# bytes can decode to is tabled once - the amount of every step, the z-score of every quarter,
# the flags of every kind, novelty and counterparty match together - so an entry is one
# lookup each and one tuple built positionally (a NamedTuple built from keywords cost ~3 us
# an entry, ~50 us an event; the table lookups halve what remained, measured).
_AMOUNTS: Final = tuple(2.0 ** (q / 2048) - 1.0 for q in range(65536))
_ZSCORES: Final = {q: q / 4 for q in range(-128, 128)}
_FLAGS: Final = tuple(
    _kind_fields(kind) + _novelty_fields(novelty) + (bool(match & 1), bool(match & 2))
    for kind in range(256)
    for novelty in range(16)
    for match in range(4)
)
"""Indexed by kind << 6 | (novelty & 15) << 2 | same | repeat << 1."""
_new_entry = tuple.__new__


class Story(tuple[StoryEntry, ...]):
    """Entries newest first, as decoded from customer.lua, with their ``pack_story`` bytes
    made while decoding: the scorer keeps every event's story in its scored record, and
    packing 16 entries again from their fields was 14 % of the scorer thread's time without a
    model (profiled, BENCHMARKS.md "Streaming scorer"), where the packed form is a byproduct
    of reading the script's bytes."""

    packed: bytes


def decode_story(raw: bytes, event_time_s: int, event_cp_hash: int) -> Story:
    """customer.lua's story bytes (count, then entries oldest first) -> entries newest first."""
    count = raw[0]
    seen: set[int] = set()
    decoded: list[StoryEntry] = []
    rows: list[tuple[int, int, int, int, int]] = []  # the packed form's fields
    for t_s, amount_q, z_q, kind, novelty, cp_hash in ENTRY.iter_unpack(
        raw[1 : 1 + count * ENTRY.size]
    ):  # oldest first; fields in StoryEntry's order
        seconds = max(0, event_time_s - t_s)
        same, repeat = cp_hash == event_cp_hash, cp_hash in seen
        decoded.append(
            _new_entry(
                StoryEntry,
                (seconds, _AMOUNTS[amount_q], _ZSCORES[z_q])
                + _FLAGS[kind << 6 | (novelty & 15) << 2 | same | repeat << 1],
            )
        )
        bits = (novelty & _NOVELTY_BITS) | (_SAME if same else 0) | (_REPEAT if repeat else 0)
        rows.append((seconds, amount_q, z_q, kind, bits))
        seen.add(cp_hash)
    decoded.reverse()
    story = Story(decoded)
    story.packed = _packed_format(len(rows)).pack(*chain.from_iterable(reversed(rows)))
    return story


_PACKED_FORMATS: dict[int, struct.Struct] = {}


def _packed_format(count: int) -> struct.Struct:
    fmt = _PACKED_FORMATS.get(count)
    if fmt is None:
        fmt = _PACKED_FORMATS[count] = struct.Struct("<" + "IHbBB" * count)
    return fmt


STORY_FEATURES: Final = (
    "story_events",
    "story_span_s",
    "story_min_gap_s",
    "story_inbound",
    "story_small",
    "story_new_counterparties",
    "story_new_devices",
    "story_same_counterparty",
    "story_same_counterparty_rising",
    "story_high_risk",
    "story_max_zscore",
    "story_amount_vs_mean",
)
"""Summaries of the story, appended to the context features (see ``story_features``)."""


def story_features(entries: tuple[StoryEntry, ...], amount_usd: float) -> tuple[float, ...]:
    """The story in numbers (``STORY_FEATURES`` order): what a table of aggregates can say
    about the last events - how many, over how long, the shortest gap between consecutive
    ones (this event included), inbound ones, small ones (card-testing probes), new
    counterparties and devices, payments to this event's counterparty and how many of those
    rose in amount in a row up to this one (escalation), high-risk countries, the largest
    z-score, and this amount against the story's mean (log2 ratio; 0 with no story)."""
    if not entries:
        return (0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    # One pass, newest entry first (on the hot path: every event decodes its story).
    # the first gap is this event's to the newest entry, then between consecutive entries
    min_gap, previous = entries[0].seconds_before, 0
    inbound = small = new_counterparties = new_devices = high_risk = 0
    total_usd = 0.0
    max_z = entries[0].zscore
    same: list[float] = [amount_usd]  # this event's counterparty, newest first
    for entry in entries:
        gap = entry.seconds_before - previous
        if gap < min_gap:
            min_gap = gap
        previous = entry.seconds_before
        amount = entry.amount_usd
        total_usd += amount
        inbound += not entry.outbound
        small += amount <= SMALL_AMOUNT_USD
        new_counterparties += entry.counterparty_new
        new_devices += entry.device_new
        high_risk += entry.high_risk_country
        if entry.zscore > max_z:
            max_z = entry.zscore
        if entry.same_counterparty:
            same.append(amount)
    rising = 0  # how many rose in a row up to this event
    for later, earlier in pairwise(same):
        if later > earlier:
            rising += 1
        else:
            break
    mean_usd = total_usd / len(entries)
    return (
        float(len(entries)),
        float(entries[-1].seconds_before),
        float(min_gap),
        float(inbound),
        float(small),
        float(new_counterparties),
        float(new_devices),
        float(len(same) - 1),
        float(rising),
        float(high_risk),
        max_z,
        math.log2((1.0 + amount_usd) / (1.0 + mean_usd)),
    )


def pack_story(entries: tuple[StoryEntry, ...]) -> bytes:
    """Entries (newest first) as compact bytes, for storing beside the features (dataset
    caches, scored records): 9 bytes an entry, exact (the amount is kept in the script's own
    logarithmic steps). A decoded ``Story`` carries its bytes already."""
    if isinstance(entries, Story):
        return entries.packed
    return b"".join(
        _PACKED.pack(
            e.seconds_before,
            round(math.log2(1.0 + e.amount_usd) * 2048),
            round(e.zscore * 4),
            event_kind(e.channel_code, e.outbound, e.counterparty_type_code, e.high_risk_country),
            (_CP_NEW if e.counterparty_new else 0)
            | (_DEVICE_NEW if e.device_new else 0)
            | (_COUNTRY_NEW if e.country_new else 0)
            | (_LATE if e.late else 0)
            | (_SAME if e.same_counterparty else 0)
            | (_REPEAT if e.repeat_counterparty else 0),
        )
        for e in entries
    )


def unpack_story(raw: bytes) -> Story:
    """The inverse of :func:`pack_story` (the result carries ``raw`` as its packed form)."""
    story = Story(
        StoryEntry(
            seconds_before=seconds,
            amount_usd=2.0 ** (amount_q / 2048) - 1.0,
            zscore=z_q / 4,
            channel_code=kind & _CHANNEL_MASK,
            outbound=bool(kind & _OUTBOUND),
            counterparty_type_code=(kind >> _TYPE_SHIFT) & _TYPE_MASK,
            high_risk_country=bool(kind & _HIGH_RISK),
            counterparty_new=bool(bits & _CP_NEW),
            device_new=bool(bits & _DEVICE_NEW),
            country_new=bool(bits & _COUNTRY_NEW),
            late=bool(bits & _LATE),
            same_counterparty=bool(bits & _SAME),
            repeat_counterparty=bool(bits & _REPEAT),
        )
        for seconds, amount_q, z_q, kind, bits in _PACKED.iter_unpack(raw)
    )
    story.packed = bytes(raw)
    return story
