"""When an unlabelled event may be taken as legitimate: the label maturity.

A bank learns that a payment was fraud weeks after it happened (a chargeback, a confirmed
case); until then an unlabelled event is *unknown*, not legitimate. Training and evaluation
therefore count an unlabelled event as legitimate only once it is older than the maturity -
the time by which nearly every label of its kind has arrived - and leave younger events out.
The feedback-loop trainer applies the same rule to the scored events it presumes legitimate
(``trainer.negative_maturity_days``, see docs/feedback-loop.md); the definitions are the same:

    mature(event) <=> event_time <= clock - maturity

where the clock is the newest moment the data knows of. Pure functions of numbers, no torch
and no I/O, so the context store can use the same estimate for its label-derived features.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import numpy as np

MIN_MATURITY_DAYS: Final = 1.0
"""Never less than a day: labels that come within hours (an analyst's look at an alert) say
nothing about frauds nobody alerted, which come as chargebacks much later."""
MAX_MATURITY_DAYS: Final = 180.0
"""Never more than about six months: card schemes allow chargebacks up to 120 days after the
transaction in the common cases; a longer estimate comes from a few very late labels and
would leave most of a year's history out of training."""


def observed_label_delay_days(
    label_delays_in_days: Iterable[float],
    quantile: float = 0.9,
    *,
    max_days: float = MAX_MATURITY_DAYS,
) -> float:
    """The delay within which ``quantile`` of the observed labels arrived, in whole days
    (rounded up), clamped to [:data:`MIN_MATURITY_DAYS`, ``max_days``] (a caller that needs a
    shorter window, such as a feature's, lowers it).

    ``label_delays_in_days`` are ``label_time - event_time`` in days, one per label; pass the
    labels that matter for maturity (suspicious ones: the frauds whose arrival is late). The
    quantile is an observed delay: the smallest within which at least ``quantile`` of the
    labels arrived (numpy's ``inverted_cdf``, no interpolation). It underestimates when the
    data ends soon after its events (labels still to come are not observed), which is one
    more reason for a high quantile rather than the median.

    Raises ValueError for an empty input, a negative or non-finite delay, or a quantile
    outside (0, 1].
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    delays = np.fromiter(label_delays_in_days, dtype=np.float64)
    if delays.size == 0:
        raise ValueError("no label delays to estimate a maturity from")
    if not np.isfinite(delays).all() or (delays < 0).any():
        raise ValueError("label delays must be finite and not negative")
    observed = float(np.quantile(delays, quantile, method="inverted_cdf"))
    return min(max_days, max(MIN_MATURITY_DAYS, float(math.ceil(observed))))


def maturity_horizon_ms(clock_ms: int, maturity_days: float) -> int:
    """The newest event time (epoch ms) that is mature at ``clock_ms``."""
    return clock_ms - int(maturity_days * 86_400_000)
