"""The numeric context features of one event: what the narrative puts into words, and what the
hybrid model's numeric path and the GBDT baseline read directly.

``FEATURE_NAMES`` is the stable order of :meth:`ContextFeatures.to_vector`; a model stores it
and refuses a vector in another order. Append new features at the end of a group and bump
``FEATURES_VERSION``; never reorder.

Conventions: amounts in USD at the fixed rates of :mod:`schemas.reference`; windows are
"as of the event's own time, the event included" (so the first outbound of an hour has
``out_count_1h == 1``); ``-1`` means "no such thing" (no previous event, no inbound yet, no
round trip); ``*_code`` features are categorical (see the mappings below). 1h and 24h customer
windows are exact sliding windows over event time; 7d and 30d windows and counterparty windows
are day- or hour-granular (see docs/context.md for the exact rules).

Why a NamedTuple rather than a frozen dataclass: the design called for a frozen slotted
dataclass, but with 56 fields its ``__init__`` costs ~7.6 µs per event on the benchmark machine
(one ``object.__setattr__`` per field), a sixth of the 50 µs per-event budget; a NamedTuple is
equally immutable and slot-free, typed per field for mypy, and builds in ~0.4 µs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from schemas.common import Channel, CounterpartyType

FEATURES_VERSION: Final = "f2"
"""f2 appended the card's exposure to compromised points (customer) and the maturity-aware
counterparty risk; f1 (56 features) is the same list without them, see ``FEATURE_SETS``."""

# Categorical codes: explicit, so reordering an enum in schemas/ never silently changes them.
CHANNEL_CODES: Final[dict[Channel, int]] = {
    Channel.CARD: 0,
    Channel.ECOMMERCE: 1,
    Channel.ATM: 2,
    Channel.WIRE: 3,
    Channel.ACH: 4,
    Channel.P2P: 5,
    Channel.CASH: 6,
    Channel.CRYPTO: 7,
}
COUNTERPARTY_TYPE_CODES: Final[dict[CounterpartyType, int]] = {
    CounterpartyType.MERCHANT: 0,
    CounterpartyType.TERMINAL: 1,
    CounterpartyType.ACCOUNT: 2,
    CounterpartyType.ATM: 3,
    CounterpartyType.BRANCH: 4,
    CounterpartyType.EXCHANGE: 5,
}


class ContextFeatures(NamedTuple):
    """Features of one event in the light of its customer's and counterparty's history."""

    # --- the event itself (computed from the event, no history) -----------------------------
    amount_usd: float
    is_outbound: float
    channel_code: float  # CHANNEL_CODES
    counterparty_type_code: float  # COUNTERPARTY_TYPE_CODES
    risky_mcc: float  # merchant category in reference.RISKY_MCCS
    high_risk_country: float  # country in reference.HIGH_RISK_COUNTRIES
    near_threshold_cash: float  # cash deposit in [80%, 100%) of the reporting threshold
    hour_of_day: float  # UTC
    is_weekend: float  # Saturday or Sunday, UTC
    has_terminal: float  # a card terminal is named: the cp_ features below describe it

    # --- the customer (CUSTOMER_RECORD: computed in Redis by customer.lua) -------------------
    out_count_1h: float
    out_sum_1h: float
    out_count_24h: float
    out_sum_24h: float
    in_count_24h: float
    in_sum_24h: float
    out_count_7d: float
    out_sum_7d: float
    in_count_7d: float
    in_sum_7d: float
    out_count_30d: float
    out_sum_30d: float
    in_count_30d: float
    in_sum_30d: float
    distinct_counterparties_1h: float
    distinct_counterparties_24h: float
    distinct_countries_24h: float
    distinct_devices_24h: float
    counterparty_new: float  # first time this customer deals with this counterparty
    counterparty_known_days: float  # since the customer first dealt with it (0 when new)
    new_counterparties_24h: float  # counterparties first seen in the last 24h (this included)
    device_new: float  # device never seen for this customer (0 when no device)
    country_new: float  # country never seen for this customer
    amount_zscore: float  # ln(1+amount) vs this customer's history in the same direction
    amount_to_mean_ratio: float  # amount / mean amount in the same direction (1 if no history)
    baseline_count: float  # earlier events in the same direction behind the two above
    seconds_since_previous: float  # dormancy; -1 for the customer's first event
    account_age_days: float  # since the customer's first event seen
    small_count_1h: float  # payments <= reference.SMALL_AMOUNT_USD (card testing)
    ecommerce_count_1h: float
    risky_mcc_count_1h: float
    near_threshold_cash_7d: float  # structuring
    cash_in_sum_7d: float
    inbound_senders_7d: float  # distinct (fan-in)
    seconds_since_inbound: float  # since the previous inbound (pass-through); -1 if none
    out_in_ratio_24h: float  # out_sum_24h / in_sum_24h; -1 if nothing came in
    round_trip_match: float  # inbound transfer within 5% of an outbound one in 30 days
    round_trip_days: float  # since that outbound transfer; -1 if none
    late: float  # older than the customer's newest event by more than the tolerance
    # f2: the card paid, within the exposure window before the event, at points confirmed
    # compromised by labels known by the event's time (common point of purchase)
    compromised_points: float  # distinct such points
    days_since_compromised_visit: float  # since the latest such payment; -1 if none

    # --- the counterparty entity (COUNTERPARTY_RECORD, counterparty.lua): the card terminal
    # when the event names one (the unit a skimmer compromises), else the counterparty
    cp_count_24h: float  # its events with any customer, hour-granular
    cp_count_7d: float
    cp_customers_24h: float  # distinct customers
    cp_customers_7d: float
    cp_fraud_labels_30d: float  # its events of the last 30 days labelled fraud by then
    cp_fraud_rate_30d: float  # ... as a share of its events in those 30 days
    cp_age_days: float  # since its first event seen
    # f2: maturity-aware risk - events of the "mature" days D-m-w+1 .. D-m (w = 1, 7, 30 days,
    # D the event's day, m = label maturity: labels of such events have normally arrived), the
    # fraud labels known by the event's time among them, and their share; immature recent days
    # never dilute the rate
    cp_mature_count_1d: float
    cp_mature_count_7d: float
    cp_mature_count_30d: float
    cp_mature_fraud_1d: float
    cp_mature_fraud_7d: float
    cp_mature_fraud_30d: float
    cp_mature_rate_1d: float
    cp_mature_rate_7d: float
    cp_mature_rate_30d: float
    cp_days_since_fraud: float  # since its latest event labelled fraud (label known); -1 if none

    # --- the customer's story (STORY_FEATURES: computed in Python from the last events that
    # customer.lua remembers, see schemas/story.py) -------------------------------
    story_events: float  # remembered events before this one (up to story_events)
    story_span_s: float  # from the oldest of them to this event
    story_min_gap_s: float  # shortest gap between consecutive ones, this included; -1 if none
    story_inbound: float
    story_small: float  # payments <= reference.SMALL_AMOUNT_USD
    story_new_counterparties: float
    story_new_devices: float
    story_same_counterparty: float  # with this event's counterparty
    story_same_counterparty_rising: float  # ... rising in amount in a row up to this one
    story_high_risk: float  # to or from high-risk countries
    story_max_zscore: float
    story_amount_vs_mean: float  # log2 of this amount against their mean

    def to_vector(self) -> list[float]:
        """The features in ``FEATURE_NAMES`` order."""
        return list(self)


FEATURE_NAMES: Final[tuple[str, ...]] = ContextFeatures._fields

_F2_ONLY: Final = frozenset(
    {"compromised_points", "days_since_compromised_visit"}
    | {name for name in FEATURE_NAMES if name.startswith(("cp_mature_", "cp_days_since", "story_"))}
)
FEATURE_SETS: Final[dict[str, tuple[str, ...]]] = {
    "f1": tuple(name for name in FEATURE_NAMES if name not in _F2_ONLY),
    "f2": FEATURE_NAMES,
}
"""The features of each features version, in the order a model of that version reads them."""

EVENT_FIELDS: Final = FEATURE_NAMES[: FEATURE_NAMES.index("out_count_1h")]
CUSTOMER_RECORD: Final = FEATURE_NAMES[
    FEATURE_NAMES.index("out_count_1h") : FEATURE_NAMES.index("cp_count_24h")
]
"""The customer features in the order customer.lua packs them."""

COUNTERPARTY_RECORD: Final = tuple(
    name.removeprefix("cp_")
    for name in FEATURE_NAMES[
        FEATURE_NAMES.index("cp_count_24h") : FEATURE_NAMES.index("story_events")
    ]
)
"""What counterparty.lua packs (``cp_`` + name in FEATURE_NAMES)."""
STORY_PART: Final = FEATURE_NAMES[FEATURE_NAMES.index("story_events") :]


def assemble(
    event_part: tuple[float, ...],
    customer_part: tuple[float, ...],
    counterparty_part: tuple[float, ...],
    story_part: tuple[float, ...],
) -> ContextFeatures:
    """Join the parts computed by Python (event, story) and by the Redis scripts."""
    return ContextFeatures._make(event_part + customer_part + counterparty_part + story_part)


@lru_cache(maxsize=64)
def _columns(names: tuple[str, ...]) -> NDArray[np.intp]:
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(f"features this code does not compute: {', '.join(unknown)}")
    return np.asarray([index[name] for name in names], dtype=np.intp)


def select_features(rows: NDArray[np.float32], names: Sequence[str]) -> NDArray[np.float32]:
    """The columns ``names`` of ``rows`` (vectors in FEATURE_NAMES order): what a model of an
    older features version reads. Raises ValueError for a name this code does not compute."""
    if tuple(names) == FEATURE_NAMES:
        return rows
    return rows.reshape(len(rows), len(FEATURE_NAMES))[:, _columns(tuple(names))]
