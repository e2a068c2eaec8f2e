"""Words of narrative template n1: numbers, level words and nouns, never digits.

Subword tokenizers read digits poorly (a probe on card-fraud data: average precision 0.31 for
raw numbers vs 0.61 for worded levels, same model), so counts become words ("fourth", "three",
"dozens of") and magnitudes become levels fitted on training data. Changing any word here
changes what models read: bump ``spec.TEMPLATE_VERSION``.
"""

from __future__ import annotations

from typing import Final

from schemas.common import Channel, CounterpartyType, Direction

_CARDINALS: Final = (
    "no",
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
_ORDINALS: Final = (
    "",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
)


def quantity(n: float, plural: str) -> str:
    """ "three payments", "more than ten payments", "dozens of payments", "hundreds of ..."."""
    count = int(n)
    if count <= 10:
        return f"{_CARDINALS[max(count, 0)]} {plural}"
    if count < 20:
        return f"more than ten {plural}"
    if count < 100:
        return f"dozens of {plural}"
    return f"hundreds of {plural}"


def count_of(n: float, singular: str, plural: str) -> str:
    """ "one confirmed fraud", "three confirmed frauds", "dozens of confirmed frauds"."""
    return f"one {singular}" if int(n) == 1 else quantity(n, plural)


def nth(n: float, singular: str, plural: str) -> str:
    """ "fourth outbound payment", or the quantity of the plural when past ten."""
    count = int(n)
    if 1 <= count <= 10:
        return f"{_ORDINALS[count]} {singular}"
    return quantity(count, plural)


# Level words, one per bucket (spec.LEVELED quantiles + 1).
AMOUNT_LEVELS: Final = (
    "amount tiny",
    "amount small",
    "amount moderate",
    "amount large",
    "amount very large",
    "amount exceptionally large",
)
VS_USUAL: Final = (
    "far below this customer's usual",
    "below this customer's usual",
    "in line with this customer's usual",
    "above this customer's usual",
    "far above this customer's usual",
    "extremely far above this customer's usual",
)
TOTAL_LEVELS: Final = ("modest", "large", "very large", "exceptional")
CUSTOMER_LEVELS: Final = ("few", "several", "many", "very many")
RATE_LEVELS: Final = ("low", "elevated", "high")

EVENT_PHRASES: Final[dict[tuple[Channel, Direction], str]] = {
    (Channel.CARD, Direction.OUTBOUND): "card payment in store",
    (Channel.CARD, Direction.INBOUND): "card refund in store",
    (Channel.ECOMMERCE, Direction.OUTBOUND): "online card payment",
    (Channel.ECOMMERCE, Direction.INBOUND): "online card refund",
    (Channel.ATM, Direction.OUTBOUND): "atm cash withdrawal",
    (Channel.ATM, Direction.INBOUND): "atm cash deposit",
    (Channel.WIRE, Direction.OUTBOUND): "outbound wire",
    (Channel.WIRE, Direction.INBOUND): "inbound wire",
    (Channel.ACH, Direction.OUTBOUND): "outbound bank transfer",
    (Channel.ACH, Direction.INBOUND): "inbound bank transfer",
    (Channel.P2P, Direction.OUTBOUND): "outbound person to person payment",
    (Channel.P2P, Direction.INBOUND): "inbound person to person payment",
    (Channel.CASH, Direction.OUTBOUND): "cash withdrawal at a branch",
    (Channel.CASH, Direction.INBOUND): "cash deposit",
    (Channel.CRYPTO, Direction.OUTBOUND): "transfer to a crypto exchange",
    (Channel.CRYPTO, Direction.INBOUND): "transfer from a crypto exchange",
}


STORY_PHRASES: Final[dict[tuple[Channel, Direction], str]] = {
    (Channel.CARD, Direction.OUTBOUND): "card in store",
    (Channel.CARD, Direction.INBOUND): "card refund",
    (Channel.ECOMMERCE, Direction.OUTBOUND): "online card",
    (Channel.ECOMMERCE, Direction.INBOUND): "online refund",
    (Channel.ATM, Direction.OUTBOUND): "atm cash",
    (Channel.ATM, Direction.INBOUND): "atm deposit",
    (Channel.WIRE, Direction.OUTBOUND): "wire out",
    (Channel.WIRE, Direction.INBOUND): "wire in",
    (Channel.ACH, Direction.OUTBOUND): "transfer out",
    (Channel.ACH, Direction.INBOUND): "transfer in",
    (Channel.P2P, Direction.OUTBOUND): "p2p out",
    (Channel.P2P, Direction.INBOUND): "p2p in",
    (Channel.CASH, Direction.OUTBOUND): "cash out",
    (Channel.CASH, Direction.INBOUND): "cash in",
    (Channel.CRYPTO, Direction.OUTBOUND): "crypto out",
    (Channel.CRYPTO, Direction.INBOUND): "crypto in",
}
"""The story's shorter event phrases (a story entry is read many times per narrative)."""


def counterparty_noun(kind: CounterpartyType, direction: Direction) -> str:
    """What the counterparty is to this customer: beneficiary, sender, merchant, ..."""
    if kind is CounterpartyType.ACCOUNT:
        return "beneficiary" if direction is Direction.OUTBOUND else "sender"
    if kind is CounterpartyType.TERMINAL:
        return "merchant"
    return kind.value  # merchant, atm, branch, exchange


COUNTERPARTY_NOUNS: Final = {
    (kind, direction): counterparty_noun(kind, direction)
    for kind in CounterpartyType
    for direction in Direction
}

RISKY_CATEGORY_WORDS: Final[dict[str, str]] = {
    "4829": "money transfer",
    "5094": "precious metals",
    "5732": "electronics",
    "5944": "jewellery",
    "5947": "gift cards",
    "5967": "telemarketing",
    "6051": "quasi cash",
    "6540": "stored value cards",
    "7995": "gambling",
}
"""Short names of reference.RISKY_MCCS for the narrative (the reference names are long)."""
