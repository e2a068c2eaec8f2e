"""ISO reference data: currencies (ISO 4217) and countries (ISO 3166-1 alpha-2).

The code lists come from pycountry, which tracks the ISO standards; only the currencies'
minor-unit exponents (not in pycountry) are kept here, as the exceptions to the usual 2.
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
