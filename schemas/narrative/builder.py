"""The narrative builder: event + context -> a short text of worded levels and comparisons.

Pure and deterministic: the same event, features and spec always give the same text, so a
replay narrates exactly what live traffic did. Clauses come in a fixed order of importance
(``CLAUSE_ORDER``); a clause appears only when it says something (a known device, a daytime
payment are left out); when the text would exceed the model's ``MAX_TOKENS``, clauses are
dropped from the end. Each clause has a stable id, so the model's reasons can name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from schemas.common import CounterpartyType, Direction
from schemas.features import FEATURE_NAMES, ContextFeatures
from schemas.narrative.spec import NarrativeSpec
from schemas.narrative.story import entry_text, memo_text
from schemas.narrative.tokens import SEPARATOR_TOKENS, SPECIAL_TOKENS, clause_tokens
from schemas.narrative.words import (
    AMOUNT_LEVELS,
    COUNTERPARTY_NOUNS,
    CUSTOMER_LEVELS,
    EVENT_PHRASES,
    RATE_LEVELS,
    RISKY_CATEGORY_WORDS,
    TOTAL_LEVELS,
    VS_USUAL,
    count_of,
    nth,
    quantity,
)
from schemas.reference import NIGHT_HOURS_UTC, REPORTING_THRESHOLD_USD
from schemas.story import StoryEntry
from schemas.transaction import TransactionEvent

SEPARATOR: Final = "; "

CLAUSE_ORDER: Final = (
    "event",
    "amount_level",
    "amount_vs_usual",
    "counterparty",
    "cp_fraud_rate",
    "cp_confirmed_fraud",
    "cp_fraud_recency",
    "compromised_exposure",
    "country",
    "device",
    "dormancy",
    "velocity_1h",
    "small_payments_1h",
    "counterparties_1h",
    "online_burst_1h",
    "risky_category",
    "structuring",
    "cash_week_total",
    "fan_in",
    "pass_through",
    "out_matches_in",
    "round_trip",
    "new_counterparties",
    "velocity_24h",
    "cp_customers",
    "cp_new_to_bank",
    "account_age",
    "time_of_day",
    "late",
    *(f"story_{i}" for i in range(1, 65)),
    "memo",
)
"""Every clause id, most important first (the order they appear in and are kept in). Template
n1 uses ``cp_fraud_rate``; n2 replaced it by the maturity-aware ``cp_confirmed_fraud``, added
``cp_fraud_recency`` and ``compromised_exposure``, then tells the story (``story_1`` is the
newest remembered event) and the customer's reference (``memo``, kept whatever the length:
its room is reserved first)."""

_HOUR_S: Final = 3600.0
_DAY_S: Final = 86400.0
_MIN_BASELINE: Final = 3.0  # earlier payments needed before "usual" means anything


@dataclass(frozen=True, slots=True)
class Clause:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Narrative:
    """What the model reads (``text``), its parts, the numbers behind it and the spec version."""

    text: str
    clauses: tuple[Clause, ...]
    features: tuple[float, ...]
    """``ContextFeatures`` in FEATURE_NAMES order (for the hybrid model and the GBDT)."""
    version: str
    """The NarrativeSpec version; a model is trained on, and served with, one version."""
    story: tuple[StoryEntry, ...] = ()
    """The story the context carried (kept with scored records, to narrate them again)."""


def narrative_without(narrative: Narrative, clause_id: str) -> str:
    """The text with one clause left out (clause occlusion for the model's reasons)."""
    return SEPARATOR.join(c.text for c in narrative.clauses if c.id != clause_id)


# Clause texts come from a finite vocabulary: each (id, text) is built and tokenized once, and
# the Clause object reused (the cache is bounded only as a guard; a few hundred are used).
_clauses: dict[tuple[str, str], tuple[Clause, int]] = {}


def _clause(clause_id: str, text: str) -> tuple[Clause, int]:
    """The clause and its token count."""
    key = (clause_id, text)
    found = _clauses.get(key)
    if found is None:
        found = (Clause(clause_id, text), clause_tokens(text))
        if len(_clauses) < 100_000:
            _clauses[key] = found
    return found


def build_narrative(
    event: TransactionEvent,
    f: ContextFeatures,
    spec: NarrativeSpec,
    story: tuple[StoryEntry, ...] = (),
) -> Narrative:
    """Narrate ``event`` in the light of its context features ``f`` and the customer's
    ``story`` (the remembered events before it, newest first; none: no story clauses)."""
    budget = spec.max_tokens - SPECIAL_TOKENS + SEPARATOR_TOKENS  # the first clause has no ";"
    n2 = spec.template_version != "n1"
    memo = memo_text(event.memo) if n2 else ""
    memo_clause = Clause("memo", memo) if memo else None
    if memo_clause is not None:  # free text: counted, never cached
        budget -= clause_tokens(memo, cache=False) + SEPARATOR_TOKENS
    kept: list[Clause] = []
    for clause_id, text in _clause_texts(event, f, spec):
        clause, tokens = _clause(clause_id, text)
        budget -= tokens + SEPARATOR_TOKENS
        if budget < 0:
            break  # clauses are in order of importance: the rest matter less
        kept.append(clause)
    if n2 and budget >= 0:
        for index, entry in enumerate(story, start=1):
            clause, tokens = _clause(f"story_{index}", entry_text(entry, spec))
            budget -= tokens + SEPARATOR_TOKENS
            if budget < 0:
                break  # the newest come first: older ones matter less
            kept.append(clause)
    if memo_clause is not None:
        kept.append(memo_clause)
    return Narrative(
        text=SEPARATOR.join([c.text for c in kept]),
        clauses=tuple(kept),
        features=f,
        version=spec.version,
        story=story,
    )


def _clause_texts(
    event: TransactionEvent, f: ContextFeatures, spec: NarrativeSpec
) -> list[tuple[str, str]]:
    """(clause id, text) in CLAUSE_ORDER, only the clauses that have something to say."""
    out: list[tuple[str, str]] = []
    add = out.append
    direction = event.direction
    outbound = direction is Direction.OUTBOUND
    noun = COUNTERPARTY_NOUNS[(event.counterparty_type, direction)]
    has_history = f.seconds_since_previous >= 0

    add(("event", EVENT_PHRASES[(event.channel, direction)]))
    add(("amount_level", AMOUNT_LEVELS[spec.level("amount_usd", f.amount_usd)]))
    if f.baseline_count >= _MIN_BASELINE:
        add(("amount_vs_usual", VS_USUAL[spec.level("amount_zscore", f.amount_zscore)]))
    else:
        add(("amount_vs_usual", "no usual amount yet"))

    if f.counterparty_new:
        add(("counterparty", f"{noun} new to this customer"))
    else:
        days = f.counterparty_known_days
        if days < 1:
            known = "first used today"
        elif days < 7:
            known = "first used this week"
        elif days < 60:
            known = "known for weeks"
        elif days < 365:
            known = "known for months"
        else:
            known = "known for years"
        add(("counterparty", f"{noun} {known}"))

    # the counterparty entity is the terminal when the event names one
    entity = "terminal" if f.has_terminal else noun
    if spec.template_version == "n1":
        if f.cp_fraud_labels_30d >= 1:
            rate = RATE_LEVELS[spec.level("cp_fraud_rate_30d", f.cp_fraud_rate_30d)]
            add(("cp_fraud_rate", f"{entity}'s recent fraud rate {rate}"))
    else:
        out.extend(_counterparty_risk(f, spec, entity))

    new_country = f.country_new and has_history
    if f.high_risk_country and new_country:
        add(("country", "high-risk country, never used before"))
    elif f.high_risk_country:
        add(("country", "high-risk country"))
    elif new_country:
        add(("country", "country never used before"))
    if f.device_new and has_history:
        add(("device", "new device"))

    gap = f.seconds_since_previous
    if gap >= 180 * _DAY_S:
        add(("dormancy", "first activity in over half a year"))
    elif gap >= 60 * _DAY_S:
        add(("dormancy", "first activity in months"))
    elif gap >= 21 * _DAY_S:
        add(("dormancy", "first activity in weeks"))

    if outbound and f.out_count_1h >= 2:
        text = nth(
            f.out_count_1h, "outbound payment within the hour", "outbound payments within the hour"
        )
        level = spec.level("out_sum_1h", f.out_sum_1h)
        add(("velocity_1h", f"{text}, hour total {TOTAL_LEVELS[level]}" if level else text))
    if f.small_count_1h >= 3:
        add(
            ("small_payments_1h", quantity(f.small_count_1h, "small payments") + " within the hour")
        )
    if f.distinct_counterparties_1h >= 3:
        add(
            (
                "counterparties_1h",
                quantity(f.distinct_counterparties_1h, "different counterparties")
                + " within the hour",
            )
        )
    if f.ecommerce_count_1h >= 3:
        add(
            (
                "online_burst_1h",
                quantity(f.ecommerce_count_1h, "online payments") + " within the hour",
            )
        )
    if f.risky_mcc and event.mcc is not None:
        text = f"risky merchant category, {RISKY_CATEGORY_WORDS.get(event.mcc, 'other')}"
        if f.risky_mcc_count_1h >= 2:
            text += ", " + nth(
                f.risky_mcc_count_1h,
                "such purchase within the hour",
                "such purchases within the hour",
            )
        add(("risky_category", text))

    near_week = f.near_threshold_cash_7d
    if f.near_threshold_cash:
        text = "cash deposit just under the reporting threshold"
        if near_week >= 2:
            text += ", " + nth(near_week, "such deposit this week", "such deposits this week")
        add(("structuring", text))
    elif near_week >= 2:
        add(
            (
                "structuring",
                quantity(near_week, "deposits just under the reporting threshold") + " this week",
            )
        )
    if near_week >= 1 and f.cash_in_sum_7d >= REPORTING_THRESHOLD_USD:
        add(("cash_week_total", "week's cash deposits above the reporting threshold"))

    if f.inbound_senders_7d >= 3:
        add(("fan_in", quantity(f.inbound_senders_7d, "different senders") + " this week"))
    since_in = f.seconds_since_inbound
    if outbound and 0 <= since_in < 6 * _HOUR_S:
        add(
            (
                "pass_through",
                "within the hour of money arriving"
                if since_in < _HOUR_S
                else "within hours of money arriving",
            )
        )
    if outbound and f.in_sum_24h > 0 and 0.8 <= f.out_in_ratio_24h <= 1.25:
        add(("out_matches_in", "day's outflow matches its inflow"))
    if f.round_trip_match:
        ago = f.round_trip_days
        when = "earlier today" if ago < 1 else "days ago" if ago < 7 else "weeks ago"
        add(("round_trip", f"amount matches a transfer sent {when}"))

    if f.new_counterparties_24h >= 2:
        add(
            (
                "new_counterparties",
                quantity(f.new_counterparties_24h, "new counterparties") + " in a day",
            )
        )
    if outbound and f.out_count_24h >= 3:
        text = quantity(f.out_count_24h, "outbound payments") + " in a day"
        level = spec.level("out_sum_24h", f.out_sum_24h)
        add(("velocity_24h", f"{text}, day total {TOTAL_LEVELS[level]}" if level else text))

    customers = f.cp_customers_7d
    if event.counterparty_type is CounterpartyType.ACCOUNT:
        if customers >= 2:
            who = quantity(customers, "customers")
            # the account's customers this week, whichever way the money went
            text = f"{noun} paid by {who}" if outbound else f"{noun} paid {who}"
            add(("cp_customers", text + " this week"))
    else:
        level = spec.level("cp_customers_7d", customers)
        add(("cp_customers", f"{entity} used by {CUSTOMER_LEVELS[level]} customers this week"))
    if f.cp_age_days < 1 and f.cp_count_7d <= 1:
        add(("cp_new_to_bank", f"{entity} new to the bank"))

    if not has_history:
        add(("account_age", "first payment of this customer"))
    else:
        age = f.account_age_days
        add(
            (
                "account_age",
                "account new"
                if age < 7
                else "account weeks old"
                if age < 60
                else "account months old"
                if age < 365
                else "account years old",
            )
        )

    night = int(f.hour_of_day) in NIGHT_HOURS_UTC
    if night and f.is_weekend:
        add(("time_of_day", "at night on a weekend"))
    elif night:
        add(("time_of_day", "at night"))
    if f.late:
        add(("late", "reported late"))
    return out


def _counterparty_risk(
    f: ContextFeatures, spec: NarrativeSpec, entity: str
) -> list[tuple[str, str]]:
    """Template n2: confirmed fraud at the counterparty entity among its *settled* payments
    (old enough for their labels to have arrived, so recent days never dilute the share), the
    latest confirmed fraud there, and the card's payments at points later confirmed
    compromised."""
    out: list[tuple[str, str]] = []
    if f.cp_mature_fraud_7d >= 1:
        share = RATE_LEVELS[spec.level("cp_mature_rate_7d", f.cp_mature_rate_7d)]
        frauds = count_of(f.cp_mature_fraud_7d, "confirmed fraud", "confirmed frauds")
        text = f"{entity} with {frauds} among its settled payments of the past week, {share} share"
        out.append(("cp_confirmed_fraud", text))
    elif f.cp_mature_fraud_30d >= 1:
        share = RATE_LEVELS[spec.level("cp_mature_rate_30d", f.cp_mature_rate_30d)]
        frauds = count_of(f.cp_mature_fraud_30d, "confirmed fraud", "confirmed frauds")
        text = f"{entity} with {frauds} among its settled payments of the past month, {share} share"
        out.append(("cp_confirmed_fraud", text))
    elif f.cp_fraud_labels_30d >= 1:
        frauds = count_of(f.cp_fraud_labels_30d, "fraud", "frauds")
        out.append(
            ("cp_confirmed_fraud", f"{entity} with {frauds} confirmed among recent payments")
        )
    if f.cp_days_since_fraud >= 0:
        out.append(
            ("cp_fraud_recency", "latest confirmed fraud there " + _ago(f.cp_days_since_fraud))
        )
    if f.compromised_points >= 1:
        points = count_of(f.compromised_points, "point", "points")
        when = _ago(f.days_since_compromised_visit)
        out.append(
            ("compromised_exposure", f"card used {when} at {points} later confirmed compromised")
        )
    return out


def _ago(days: float) -> str:
    if days < 1:
        return "earlier today"
    if days < 2:
        return "yesterday"
    if days < 7:
        return "this week"
    if days < 30:
        return "weeks ago"
    return "months ago"


assert len(FEATURE_NAMES) == len(ContextFeatures._fields)
