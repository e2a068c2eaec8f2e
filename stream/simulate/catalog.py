"""The simulator's fixed vocabulary: merchant categories, countries, memos, daily rhythms.

Events are generated as integer codes (an index into the tuples below) and turned into strings
only when written, which keeps generation vectorised. The shared thresholds and lists (risky
MCCs, high-risk countries, FX rates) come from :mod:`schemas.reference`, so the simulator
injects exactly what the context store watches for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas import Channel, CounterpartyType, Direction, Typology
from schemas.reference import HIGH_RISK_COUNTRIES, RISKY_MCCS, USD_PER_UNIT, minor_unit_exponent

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# ---- enums as codes (the index in these tuples is the code stored in the event columns) ----
CHANNELS: Final = tuple(Channel)
DIRECTIONS: Final = tuple(Direction)
COUNTERPARTY_TYPES: Final = tuple(CounterpartyType)
TYPOLOGIES: Final = tuple(Typology)
assert TYPOLOGIES[0] is Typology.LEGITIMATE  # code 0 means "not suspicious" everywhere


def code(values: tuple[object, ...], value: object) -> int:
    return values.index(value)


CARD, ECOM, ATM_CH, WIRE, ACH, P2P, CASH, CRYPTO = (code(CHANNELS, c) for c in Channel)
INBOUND, OUTBOUND = code(DIRECTIONS, Direction.INBOUND), code(DIRECTIONS, Direction.OUTBOUND)

# Roles say what part a customer plays in a scenario; they appear in the truth file only.
ROLES: Final = (
    "customer",  # background and look-alike events
    "victim",  # card fraud: the cardholder or account owner defrauded
    "subject",  # AML: the account that launders (mule, structurer, pass-through account...)
    "sender",  # AML: a customer of the bank paying into a mule
    "origin",  # round-tripping: where the money leaves from and returns to
    "hop",  # round-tripping: an intermediate account of the bank
)
ROLE_CUSTOMER, ROLE_VICTIM, ROLE_SUBJECT, ROLE_SENDER, ROLE_ORIGIN, ROLE_HOP = range(len(ROLES))

# Payment references: each kind has the ways people write it; a customer keeps their own way
# (stream.simulate.memos). Kinds are shared by background and scenarios: a reference only
# criminals use would be a giveaway, so the scam kinds overlap honest ones ("investment",
# "family support", "gift") and only some of their phrasings are rare in honest traffic.
MEMO_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "SALARY": ("salary", "monthly salary", "wages", "pay"),
    "PAYROLL": ("payroll", "staff wages", "salaries"),
    "RENT": ("rent", "monthly rent", "rent flat 2", "room rent", "rent - apartment"),
    "INVOICE": ("invoice", "inv 2231", "invoice 1043", "payment for invoice", "bill 772"),
    "SERVICES": ("services", "consulting", "design work", "repairs", "cleaning"),
    "THANKS": ("thanks", "thank you", "cheers", "ty"),
    "DINNER": ("dinner", "pizza", "drinks", "lunch", "groceries"),
    "GIFT": ("gift", "birthday gift", "happy birthday", "present"),
    "LOAN": ("loan", "paying you back", "loan repayment", "what i owe you"),
    "SAVINGS": ("savings", "to savings", "rainy day fund"),
    "FAMILY SUPPORT": ("family support", "for mum", "for the family", "school fees"),
    "DEPOSIT": ("deposit", "cash deposit", "takings"),
    "RENT SHARE": ("rent share", "my half of rent", "rent split", "flat rent share"),
    "INVESTMENT": ("investment", "brokerage top up", "isa contribution", "index fund"),
    # what scam victims are told to write (authorised push payment scams)
    "SCAM INVESTMENT": (
        "investment",
        "crypto investment",
        "trading account deposit",
        "platform fee",
        "withdrawal fee",
        "tax to release profits",
    ),
    "SCAM ROMANCE": (
        "for you my love",
        "gift",
        "visa fee",
        "flight ticket",
        "hospital bill",
        "customs fee for parcel",
    ),
    "SCAM IMPERSONATION": ("safe account", "security transfer", "family support", "savings"),
}
MEMOS: Final = tuple(text for variants in MEMO_KINDS.values() for text in variants)
"""Every phrasing, flat: an event's ``memo`` column indexes this (-1: none)."""
MEMO: Final = dict(
    zip(MEMO_KINDS, np.cumsum([0, *map(len, MEMO_KINDS.values())]).tolist(), strict=False)
)
"""Kind -> the index of its first phrasing (what generators and scenarios write)."""
SCAM_MEMO_KINDS: Final = frozenset({"SCAM INVESTMENT", "SCAM ROMANCE", "SCAM IMPERSONATION"})


# ---- merchant categories ----------------------------------------------------------------------
@dataclass(frozen=True)
class Category:
    mcc: str
    median_usd: float  # typical ticket
    sigma: float  # lognormal spread of the ticket
    store: float  # weight among card-present merchants
    online: float  # weight among e-commerce merchants


# Weights are relative shares of the merchant pool (popularity comes on top, per merchant).
CATEGORIES: Final = (
    Category("5411", 45.0, 0.7, 14, 1),  # grocery
    Category("5812", 38.0, 0.6, 12, 0),  # restaurants
    Category("5814", 13.0, 0.5, 10, 4),  # fast food, food delivery
    Category("5541", 42.0, 0.4, 7, 0),  # fuel
    Category("5912", 22.0, 0.7, 5, 1),  # pharmacy
    Category("5311", 60.0, 0.8, 4, 3),  # department stores
    Category("5651", 55.0, 0.7, 4, 4),  # clothing
    Category("5999", 30.0, 0.9, 5, 8),  # misc retail, marketplaces
    Category("5499", 11.0, 0.6, 6, 0),  # convenience
    Category("5813", 32.0, 0.6, 4, 0),  # bars
    Category("5200", 75.0, 0.9, 2, 1),  # home supply
    Category("5942", 24.0, 0.6, 2, 3),  # books
    Category("7230", 40.0, 0.5, 2, 0),  # barber, beauty
    Category("8011", 85.0, 0.6, 1, 0),  # doctors
    Category("4121", 19.0, 0.6, 1, 5),  # taxi, ride hailing
    Category("4111", 3.5, 0.4, 2, 1),  # transit
    Category("4511", 320.0, 0.7, 0, 2),  # airlines
    Category("7011", 180.0, 0.7, 1, 2),  # hotels
    Category("5712", 650.0, 0.8, 1, 1),  # furniture
    # risky categories: legitimate customers use them too, only rarely
    Category("5732", 220.0, 0.9, 1, 2),  # electronics
    Category("5944", 260.0, 1.0, 0.5, 0.5),  # jewellery
    Category("5947", 35.0, 0.7, 1, 0.5),  # gifts, souvenirs
    Category("6540", 90.0, 0.7, 0.3, 0.8),  # stored-value / gift card load
    Category("4829", 180.0, 0.9, 0.2, 0.5),  # money transfer
    Category("7995", 70.0, 1.0, 0.2, 0.7),  # gambling
    Category("6051", 150.0, 1.0, 0.1, 0.5),  # quasi-cash, crypto
    Category("5094", 400.0, 1.0, 0.1, 0.2),  # precious metals, watches
    Category("5967", 40.0, 0.8, 0, 0.3),  # teleservices
    # billers and subscriptions: their own pools (weights 0 keep them out of shopping)
    Category("4900", 120.0, 0.35, 0, 0),  # utilities
    Category("4814", 70.0, 0.25, 0, 0),  # telecom
    Category("6300", 150.0, 0.4, 0, 0),  # insurance
    Category("4899", 14.0, 0.4, 0, 0),  # cable, streaming
    Category("5815", 9.0, 0.5, 0, 0),  # digital media
    Category("5817", 12.0, 0.6, 0, 0),  # software, apps
    Category("5818", 10.0, 0.6, 0, 0),  # digital goods
    # business purchasing
    Category("5943", 90.0, 0.8, 0, 0),  # office supplies
    Category("5045", 700.0, 0.9, 0, 0),  # computers
)
MCCS: Final = tuple(category.mcc for category in CATEGORIES)
MCC_INDEX: Final = {mcc: index for index, mcc in enumerate(MCCS)}
MCC_MEDIAN_USD: Final = np.array([c.median_usd for c in CATEGORIES])
MCC_SIGMA: Final = np.array([c.sigma for c in CATEGORIES])
RISKY_MCC_CODES: Final = np.array([MCC_INDEX[m] for m in MCCS if m in RISKY_MCCS])
BILLER_MCCS: Final = ("4900", "4814", "6300")
SUBSCRIPTION_MCCS: Final = ("4899", "5815", "5817", "5818")
BUSINESS_MCCS: Final = ("5943", "5045", "5541", "5812", "4511", "7011")
BIG_TICKET_MCCS: Final = ("5712", "5732", "5944", "4511", "7011")


# ---- countries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Country:
    code: str
    currency: str  # of card payments there; transfers abroad are in USD
    merchants: float  # share of the foreign merchant pool located here
    travel: float  # how often customers travel here


# The bank is American: customers live in the US (a few abroad), merchants are mostly domestic.
HOME: Final = "US"
COUNTRIES_TABLE: Final = (
    Country("US", "USD", 0, 0),
    Country("CA", "CAD", 3, 4),
    Country("MX", "MXN", 2, 5),
    Country("GB", "GBP", 4, 3),
    Country("DE", "EUR", 2, 2),
    Country("FR", "EUR", 2, 3),
    Country("ES", "EUR", 1, 3),
    Country("IT", "EUR", 1, 3),
    Country("NL", "EUR", 2, 1),
    Country("IE", "EUR", 1, 1),
    Country("CH", "CHF", 1, 1),
    Country("JP", "JPY", 1, 2),
    Country("CN", "CNY", 2, 0.5),
    Country("HK", "HKD", 1, 0.5),
    Country("SG", "SGD", 1, 0.5),
    Country("AU", "AUD", 0.5, 1),
    Country("TH", "THB", 0.3, 1),
    Country("AE", "AED", 0.5, 0.5),
    Country("BR", "BRL", 0.3, 0.5),
    Country("TR", "TRY", 0.3, 0.5),
    Country("RO", "RON", 0.2, 0.2),
    Country("IN", "INR", 0.5, 0.5),
    Country("PH", "PHP", 0.2, 0.5),
    Country("CO", "COP", 0.2, 0.5),
    # transfer destinations only (no card merchants simulated there)
    Country("NG", "USD", 0, 0),
    Country("KE", "USD", 0, 0),
    Country("VN", "USD", 0, 0),
    Country("HT", "USD", 0, 0),
    Country("IR", "USD", 0, 0),
    Country("MM", "USD", 0, 0),
    Country("SY", "USD", 0, 0),
    Country("YE", "USD", 0, 0),
    Country("VE", "USD", 0, 0),
    Country("LB", "USD", 0, 0),
    Country("LA", "USD", 0, 0),
    Country("CD", "USD", 0, 0),
    Country("NP", "USD", 0, 0),
    Country("AO", "USD", 0, 0),
    Country("CM", "USD", 0, 0),
    Country("DZ", "USD", 0, 0),
    Country("VG", "USD", 0, 0),
    Country("CY", "USD", 0, 0),
    Country("PA", "USD", 0, 0),
    Country("LT", "USD", 0, 0),
)
COUNTRIES: Final = tuple(c.code for c in COUNTRIES_TABLE)
COUNTRY_INDEX: Final = {name: index for index, name in enumerate(COUNTRIES)}
US: Final = COUNTRY_INDEX[HOME]

# High-risk destinations used by the typology, weighted: the call-for-action list is rarer.
HIGH_RISK_DESTINATIONS: Final = (
    "VN",
    "KE",
    "HT",
    "NP",
    "VE",
    "LB",
    "SY",
    "YE",
    "IR",
    "MM",
    "LA",
    "CD",
    "AO",
    "CM",
    "DZ",
)
HIGH_RISK_WEIGHTS: Final = np.array([4, 3, 2, 2, 2, 2, 1, 1, 0.5, 0.5, 1, 1, 1, 1, 1])
# Family remittances go here every month, legitimately; about half are on the high-risk list,
# which is what makes the remittance a look-alike of the typology.
REMITTANCE_DESTINATIONS: Final = ("MX", "PH", "IN", "CO", "NG", "VN", "KE", "HT", "NP")
# Where round-tripped money and pass-through funds are parked: offshore and shell-friendly.
OFFSHORE_DESTINATIONS: Final = ("VG", "CY", "PA", "AE", "HK", "GB", "LT", "SG")
assert set(HIGH_RISK_DESTINATIONS) <= HIGH_RISK_COUNTRIES

# Where legitimate businesses' foreign suppliers and clients bank (Vietnam and Kenya are on the
# high-risk list and still ordinary trade partners).
TRADE_PARTNER_COUNTRIES: Final = ("CN", "CN", "HK", "DE", "GB", "MX", "CA", "SG", "AE", "CY", "PA", "VG", "LT", "TR", "IN", "VN", "KE")  # fmt: skip  # noqa: E501
# Where private customers' one-off transfers abroad go (family, property, studies); many are
# high-risk jurisdictions, so a transfer there alone proves little.
DIASPORA_COUNTRIES: Final = ("MX", "GB", "DE", "FR", "IN", "PH", "CO", "NG", "CA", "ES", "IT", "VN", "LB", "VE", "HT", "KE", "NP", "CM", "DZ", "AO", "LA", "CD")  # fmt: skip  # noqa: E501

CURRENCIES: Final = tuple(sorted({c.currency for c in COUNTRIES_TABLE}))
CURRENCY_INDEX: Final = {name: index for index, name in enumerate(CURRENCIES)}
USD: Final = CURRENCY_INDEX["USD"]
COUNTRY_CURRENCY: Final = np.array([CURRENCY_INDEX[c.currency] for c in COUNTRIES_TABLE])
# Multiply a USD amount by this to get minor units of the currency.
MINOR_PER_USD: Final = np.array(
    [10.0 ** minor_unit_exponent(cur) / USD_PER_UNIT[cur] for cur in CURRENCIES]
)


def to_minor(usd: FloatArray, currency: IntArray) -> IntArray:
    """USD amounts in minor units of each event's currency, at least one minor unit."""
    minor: IntArray = np.maximum(np.rint(usd * MINOR_PER_USD[currency]).astype(np.int64), 1)
    return minor


# ---- daily rhythm (hours UTC; see schemas.reference.NIGHT_HOURS_UTC) --------------------
def _profile(weights: list[float]) -> FloatArray:
    array: FloatArray = np.asarray(weights, dtype=np.float64)
    normalised: FloatArray = array / array.sum()
    return normalised


HOURS_SHOPPING: Final = _profile(
    [
        0.3,
        0.15,
        0.1,
        0.1,
        0.1,
        0.3,
        1,
        2,
        3,
        3.5,
        4,
        5,
        7,
        6,
        4.5,
        4.5,
        5,
        6.5,
        7,
        6,
        4.5,
        3,
        1.5,
        0.7,
    ]
)
HOURS_ONLINE: Final = _profile(
    [1.5, 0.8, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2, 2.5, 3, 3, 3.5, 3, 3, 3, 3, 3.5, 4, 5, 6, 6.5, 5, 3]
)
HOURS_DAYTIME: Final = _profile(
    [0.1, 0, 0, 0, 0, 0.1, 0.5, 1, 2, 3, 3.5, 3.5, 4, 4, 3.5, 3.5, 3.5, 3.5, 3, 2.5, 2, 1, 0.5, 0.2]
)
HOURS_OFFICE: Final = _profile(
    [0, 0, 0, 0, 0, 0, 0.2, 1, 3, 4, 4, 4, 3, 4, 4, 4, 3.5, 2, 0.5, 0.2, 0, 0, 0, 0]
)
HOURS_BATCH: Final = _profile(
    [0, 0, 0, 0.5, 2, 4, 4, 2, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
)
# Monday=0 ... Sunday=6: more shopping at weekends, business payments on weekdays only.
WEEKDAY_SHOPPING: Final = np.array([0.9, 0.9, 0.95, 1.0, 1.15, 1.25, 0.95])
WEEKDAY_OFFICE: Final = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
WEEKDAY_FLAT: Final = np.ones(7)
