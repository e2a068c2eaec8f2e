"""Field types shared by the wire models: ids, codes, enums and UTC timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)

from schemas.reference import COUNTRY_CODES, CURRENCY_CODES

# Frozen, strict and closed: a field we do not know is an error, not something to ignore,
# because a producer that misspells `amount_minor` must not see its events scored as zero.
WIRE_MODEL_CONFIG = ConfigDict(
    extra="forbid",
    strict=True,
    frozen=True,
    allow_inf_nan=False,
    str_max_length=4096,
    use_enum_values=False,
)

Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$",
        description="Opaque identifier: letters, digits and _ . : - (1-128 characters).",
    ),
]


# Timestamps outside this range are corrupt (a unit mix-up, a zero date), and one of them
# would drag a customer's event-time windows decades away.
_EARLIEST_YEAR, _LATEST_YEAR = 2000, 2100


# RFC 3339 (section 5.6, date-time): the only spelling a wire timestamp may have. pydantic's
# own parser is more lenient - it reads a digits-only string as a Unix timestamp and accepts
# ISO 8601 forms such as a space separator - and a producer relying on that would break the
# first subscriber in another language that validates against the JSON Schema.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339: Final = re.compile(RFC3339_PATTERN)


def _rfc3339_only(value: object) -> object:
    """Parse a JSON string here (a datetime is a model built in Python: the type checks it).

    Parsed here rather than by pydantic: a before-validator hands pydantic's strict mode a
    Python value, and a string is not a datetime there. datetime.fromisoformat reads every
    RFC 3339 form once 't'/'z' are upper-cased, and refuses impossible dates and offsets."""
    if not isinstance(value, str):
        return value
    if not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time string with a UTC offset, e.g. 2026-03-01T10:15:00Z"
        )
    return datetime.fromisoformat(value.upper())


def _to_utc(value: datetime) -> datetime:
    # Milliseconds are what the wire format carries: keeping microseconds would make an event
    # differ from its own re-encoding (and its alert's copy of it).
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in year 10000 in UTC: not a datetime
        raise ValueError("out of range when converted to UTC") from None
    value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if not _EARLIEST_YEAR <= value.year <= _LATEST_YEAR:
        raise ValueError(f"year {value.year} is outside {_EARLIEST_YEAR}-{_LATEST_YEAR}")
    return value


def format_utc(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a literal Z, as every wire timestamp is written
    (what most consumers, and kcat users reading by eye, expect)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_only),
    AfterValidator(_to_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    Field(
        description="RFC 3339 date-time string with a UTC offset (Z or +-HH:MM), years "
        f"{_EARLIEST_YEAR}-{_LATEST_YEAR} in UTC; stored in UTC, to the millisecond.",
        json_schema_extra={"pattern": RFC3339_PATTERN},
    ),
]


def _check_currency(code: str) -> str:
    if code not in CURRENCY_CODES:
        raise ValueError(f"unknown ISO 4217 currency code {code!r}")
    return code


def _check_country(code: str) -> str:
    if code not in COUNTRY_CODES:
        raise ValueError(f"unknown ISO 3166-1 alpha-2 country code {code!r}")
    return code


CurrencyCode = Annotated[
    str,
    Field(
        min_length=3,
        max_length=3,
        description="ISO 4217 currency code.",
        json_schema_extra={"enum": sorted(CURRENCY_CODES)},
    ),
    AfterValidator(_check_currency),
]
CountryCode = Annotated[
    str,
    Field(
        min_length=2,
        max_length=2,
        description="ISO 3166-1 alpha-2 country code.",
        json_schema_extra={"enum": sorted(COUNTRY_CODES)},
    ),
    AfterValidator(_check_country),
]

# The largest amount accepted, in minor units: 10^14 is a trillion in a 2-decimal currency,
# beyond any single real payment; larger values are treated as corrupt input.
MAX_AMOUNT_MINOR = 10**14


class Channel(StrEnum):
    CARD = "card"  # card present, at a terminal
    ECOMMERCE = "ecommerce"  # card not present
    ATM = "atm"
    WIRE = "wire"
    ACH = "ach"
    P2P = "p2p"
    CASH = "cash"  # cash deposit or withdrawal at a branch
    CRYPTO = "crypto"  # transfer to or from a crypto exchange


class Direction(StrEnum):
    INBOUND = "inbound"  # money arrives in the customer's account
    OUTBOUND = "outbound"  # money leaves it


class CounterpartyType(StrEnum):
    MERCHANT = "merchant"
    TERMINAL = "terminal"
    ACCOUNT = "account"  # a beneficiary or originator account at any bank
    ATM = "atm"
    BRANCH = "branch"
    EXCHANGE = "exchange"


class CustomerSegment(StrEnum):
    RETAIL = "retail"
    BUSINESS = "business"


class Typology(StrEnum):
    """What an event is: legitimate, or which fraud / money-laundering pattern it belongs to."""

    LEGITIMATE = "legitimate"
    # card fraud
    CARD_TESTING = "card_testing"
    ACCOUNT_TAKEOVER = "account_takeover"
    STOLEN_CARD = "stolen_card"
    COMPROMISED_TERMINAL = "compromised_terminal"
    # anti-money-laundering
    STRUCTURING = "structuring"
    MULE_FAN_IN_OUT = "mule_fan_in_out"
    ROUND_TRIPPING = "round_tripping"
    PASS_THROUGH = "pass_through"  # noqa: S105 (a typology name, not a password)
    DORMANT_REACTIVATION = "dormant_reactivation"
    HIGH_RISK_JURISDICTION = "high_risk_jurisdiction"
    # authorised push-payment fraud: the customer is talked into paying a fraudster
    APP_SCAM = "app_scam"


SUSPICIOUS_TYPOLOGIES: tuple[Typology, ...] = tuple(
    t for t in Typology if t is not Typology.LEGITIMATE
)
