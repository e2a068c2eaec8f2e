"""Reference data: the ISO code lists, and the fixed lists and thresholds that define the
typologies.

ISO currencies (ISO 4217) and countries (ISO 3166-1 alpha-2): the code lists come from
pycountry, which tracks the ISO standards; only the currencies' minor-unit exponents (not in
pycountry) are kept here, as the exceptions to the usual 2.

The typologies' numbers (docs/typologies.md) are in one place, so the simulator injects
structuring just under the same threshold the context store watches, and a "risky merchant
category" means the same thing in the context, the narratives and the simulator. These lists
are fixed snapshots, chosen for reproducibility rather than compliance: a backtest run next
year must compute the same context as today. A bank replaces them with its own lists; changing
any of them changes what the narratives say, so it requires a new narrative version.

Importing this module is cheap (no Redis, no torch): the simulator may import it freely.
"""

from __future__ import annotations

from typing import Final

import pycountry

CURRENCY_CODES: Final[frozenset[str]] = frozenset(c.alpha_3 for c in pycountry.currencies)
COUNTRY_CODES: Final[frozenset[str]] = frozenset(c.alpha_2 for c in pycountry.countries)

# ISO 4217 minor units that differ from 2 (checked against the ISO 4217 list, 2024 edition).
_MINOR_UNIT_EXCEPTIONS: Final[dict[str, int]] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    "CLF": 4,
    "UYW": 4,
}


def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point for ``currency`` (2 for most)."""
    return _MINOR_UNIT_EXCEPTIONS.get(currency, 2)


# --- thresholds -------------------------------------------------------------------------------

REPORTING_THRESHOLD_USD: Final = 10_000.0
"""Cash transactions at or above this are reported to the authorities (the US CTR rule and its
equivalents); structuring splits deposits to stay under it."""

NEAR_THRESHOLD_LOW_FRACTION: Final = 0.8
"""A cash deposit in [80%, 100%) of the reporting threshold counts as "near the threshold"."""

NEAR_THRESHOLD_LOW_USD: Final = REPORTING_THRESHOLD_USD * NEAR_THRESHOLD_LOW_FRACTION

SMALL_AMOUNT_USD: Final = 5.0
"""At or below this an authorisation is "small": card testers probe stolen numbers with
amounts of a few dollars or less, far below what the card's owner usually spends."""

NIGHT_HOURS_UTC: Final = frozenset({0, 1, 2, 3, 4, 5})
"""Hours (UTC) that count as night. Events carry no customer time zone, so the clock is UTC;
the simulator generates its daily rhythm in UTC for the same reason."""

DEFAULT_LABEL_MATURITY_DAYS: Final = 7
"""Label maturity when neither the settings nor the model name one: a week, the delay within
which most card-fraud reports arrive (counterparty risk counts only events this old)."""

# --- merchant categories ----------------------------------------------------------------------

RISKY_MCCS: Final[dict[str, str]] = {
    "4829": "money transfer / wire",
    "5094": "precious stones and metals, watches, jewellery (wholesale)",
    "5732": "electronics stores",
    "5944": "jewellery, watch and clock stores",
    "5947": "gift, card, novelty and souvenir shops",
    "5967": "direct marketing, inbound teleservices",
    "6051": "quasi-cash: money orders, foreign currency, crypto",
    "6540": "stored-value card purchase / load",
    "7995": "betting, lottery tickets, casino chips",
}
"""Merchant categories that stolen cards are cashed out through: goods that resell easily or
value that moves on at once (gift cards, quasi-cash, transfers, gambling)."""

# --- countries --------------------------------------------------------------------------------

HIGH_RISK_COUNTRIES: Final[frozenset[str]] = frozenset(
    {
        # FATF "high-risk jurisdictions subject to a call for action"
        "IR",
        "KP",
        "MM",
        # FATF "jurisdictions under increased monitoring", as of the snapshot (2025)
        "AO",
        "BG",
        "BO",
        "CD",
        "CI",
        "CM",
        "DZ",
        "HT",
        "KE",
        "LA",
        "LB",
        "MC",
        "NA",
        "NP",
        "SS",
        "SY",
        "VE",
        "VG",
        "VN",
        "YE",
    }
)
"""ISO 3166-1 alpha-2 codes treated as high-risk jurisdictions: a fixed snapshot modelled on the
FATF public lists of 2025 (they change three times a year; see the module docstring)."""

# --- currencies -------------------------------------------------------------------------------

BASE_CURRENCY: Final = "USD"

USD_PER_UNIT: Final[dict[str, float]] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.13,
    "JPY": 0.0067,
    "CNY": 0.138,
    "HKD": 0.128,
    "SGD": 0.74,
    "CAD": 0.73,
    "AUD": 0.66,
    "NZD": 0.60,
    "SEK": 0.095,
    "NOK": 0.093,
    "DKK": 0.145,
    "PLN": 0.25,
    "CZK": 0.043,
    "HUF": 0.0027,
    "RON": 0.217,
    "TRY": 0.030,
    "RUB": 0.011,
    "UAH": 0.024,
    "ILS": 0.27,
    "AED": 0.272,
    "SAR": 0.267,
    "QAR": 0.275,
    "KWD": 3.25,
    "BHD": 2.65,
    "OMR": 2.60,
    "JOD": 1.41,
    "EGP": 0.020,
    "MAD": 0.10,
    "NGN": 0.00065,
    "KES": 0.0077,
    "ZAR": 0.054,
    "GHS": 0.065,
    "INR": 0.012,
    "PKR": 0.0036,
    "BDT": 0.0084,
    "LKR": 0.0033,
    "NPR": 0.0075,
    "IDR": 0.000062,
    "MYR": 0.22,
    "THB": 0.028,
    "PHP": 0.017,
    "VND": 0.000039,
    "KRW": 0.00073,
    "TWD": 0.031,
    "MXN": 0.055,
    "BRL": 0.18,
    "ARS": 0.0010,
    "CLP": 0.0010,
    "COP": 0.00024,
    "PEN": 0.27,
    "UYU": 0.024,
    "VES": 0.027,
    "BOB": 0.145,
    "XOF": 0.00165,
    "XAF": 0.00165,
    "IRR": 0.000024,
    "KPW": 0.0011,
    "MMK": 0.00048,
    "SYP": 0.000077,
    "LBP": 0.000011,
    "AOA": 0.0011,
    "CDF": 0.00035,
    "HTG": 0.0076,
    "LAK": 0.000046,
    "DZD": 0.0074,
    "YER": 0.0040,
    "SSP": 0.00077,
    "NAD": 0.054,
}
"""Fixed conversion rates to USD (USD per one major unit), rounded mid-market rates of early
2025. Fixed on purpose: context must not depend on when it is computed, or a replay would
differ from live traffic. They only put amounts in different currencies on one scale for
comparisons (levels, sums over windows); exact amounts travel unconverted with the event."""

UNKNOWN_CURRENCY_USD_PER_UNIT: Final = 1.0
"""Rate for a valid ISO currency missing from the table. A wrong rate skews absolute levels
("very large"), but comparisons with the customer's own history stay meaningful because that
customer's other payments in the currency were converted the same way. Add a rate instead of
relying on this."""


def amount_usd(amount_minor: int, currency: str) -> float:
    """``amount_minor`` of ``currency`` in US dollars, at the fixed rate table."""
    rate = USD_PER_UNIT.get(currency, UNKNOWN_CURRENCY_USD_PER_UNIT)
    return amount_minor / 10.0 ** minor_unit_exponent(currency) * rate


def is_near_threshold_usd(amount: float) -> bool:
    """True for an amount just under the reporting threshold (structuring)."""
    return NEAR_THRESHOLD_LOW_USD <= amount < REPORTING_THRESHOLD_USD
