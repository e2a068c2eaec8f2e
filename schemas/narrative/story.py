"""Template n2's last two parts: the customer's story, and the payment reference.

The story tells the customer's remembered events before this one (``EventContext.story``),
newest first, one clause each, in words: when ("two hours earlier"), what (the event phrase),
how much (the fitted amount levels), against the customer's usual, and what was new or
repeated - never ids or digits. The reference is the customer's own text: it is quoted,
lower-cased, stripped of control characters, quotes and anything that could be read as a
clause or story separator, and capped, so it can never forge or reorder the other clauses or
the reasons (docs/models.md says what an attacker who writes it can and cannot do).
"""

from __future__ import annotations

import unicodedata
from typing import Final

from schemas.common import Direction
from schemas.features import CHANNEL_CODES, COUNTERPARTY_TYPE_CODES
from schemas.narrative.spec import NarrativeSpec
from schemas.narrative.words import AMOUNT_LEVELS, COUNTERPARTY_NOUNS, STORY_PHRASES
from schemas.story import StoryEntry

MEMO_MAX_CHARS: Final = 40
"""The reference is cut (at a word boundary) to this many characters; measured to keep p99
of the reference clause within 16 tokens (BENCHMARKS.md, narrative length)."""
MEMO_PREFIX: Final = "customer's reference "

_CHANNELS: Final = {code: channel for channel, code in CHANNEL_CODES.items()}
_TYPES: Final = {code: kind for kind, code in COUNTERPARTY_TYPE_CODES.items()}
_VS_USUAL_SHORT: Final = (
    "far below usual",
    "below usual",
    "",
    "above usual",
    "far above usual",
    "extremely far above usual",
)
_NUMBERS: Final = (
    "",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)
# Punctuation a reference keeps: what people write in payment references ("inv. 2231/a",
# "rent - march", "tom & ana", "#42"); anything else (quotes, apostrophes, ';', ':', ',',
# brackets, ...) becomes a space, so the quoted text cannot end the quote or separate clauses.
_KEPT_PUNCTUATION: Final = frozenset(".-/#&")


def when(seconds: int) -> str:
    """ "moments earlier", "four minutes earlier", "two hours earlier", "weeks earlier"."""
    if seconds < 60:
        return "moments earlier"
    minutes = seconds // 60
    if minutes < 60:
        if minutes == 1:
            return "a minute earlier"
        if minutes <= 10:
            return f"{_NUMBERS[minutes]} minutes earlier"
        return "half an hour earlier" if minutes < 45 else "an hour earlier"
    hours = seconds // 3600
    if hours < 24:
        if hours == 1:
            return "an hour earlier"
        return f"{_NUMBERS[hours]} hours earlier" if hours <= 10 else "half a day earlier"
    days = seconds // 86400
    if days == 1:
        return "a day earlier"
    if days <= 10:
        return f"{_NUMBERS[days]} days earlier"
    return "weeks earlier" if days < 30 else "months earlier"


def entry_text(entry: StoryEntry, spec: NarrativeSpec) -> str:
    """One remembered event in words."""
    direction = Direction.OUTBOUND if entry.outbound else Direction.INBOUND
    channel = _CHANNELS[entry.channel_code]
    noun = COUNTERPARTY_NOUNS[(_TYPES[entry.counterparty_type_code], direction)]
    parts = [
        f"{when(entry.seconds_before)}: {STORY_PHRASES[(channel, direction)]}",
        AMOUNT_LEVELS[spec.level("amount_usd", entry.amount_usd)].removeprefix("amount "),
    ]
    vs_usual = _VS_USUAL_SHORT[spec.level("amount_zscore", entry.zscore)]
    if vs_usual:
        parts.append(vs_usual)
    if entry.same_counterparty:
        parts.append(f"same {noun} as now")
    elif entry.counterparty_new:
        parts.append(f"new {noun}")
    if entry.device_new:
        parts.append("new device")
    if entry.high_risk_country:
        parts.append("high-risk country")
    elif entry.country_new:
        parts.append("new country")
    return ", ".join(parts)


def sanitise_memo(memo: str | None) -> str:
    """The reference as the narrative quotes it, or "" when nothing usable is left."""
    if not memo:
        return ""
    text = unicodedata.normalize("NFKC", memo).lower()
    cleaned = "".join(
        ch if ch.isalnum() or ch in _KEPT_PUNCTUATION else " "
        for ch in text
        if unicodedata.category(ch)[0] != "C"  # control, format, private use, unassigned
    )
    words = cleaned.split()
    out = ""
    for word in words:
        candidate = f"{out} {word}" if out else word
        if len(candidate) > MEMO_MAX_CHARS:
            break
        out = candidate
    if not out and words:  # one very long word: cut it
        out = words[0][:MEMO_MAX_CHARS]
    return out


def memo_text(memo: str | None) -> str:
    """The reference clause ('customer's reference "rent march"'), or "" for none."""
    cleaned = sanitise_memo(memo)
    return f'{MEMO_PREFIX}"{cleaned}"' if cleaned else ""
