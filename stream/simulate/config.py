"""What to simulate: the typed configuration of ``riskstream simulate``.

Everything that changes the output is here, so a run is reproduced from its manifest (which
records this object) and the same configuration always yields byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import SUSPICIOUS_TYPOLOGIES, Typology
from stream.simulate.errors import SimulationConfigError

DayRange = Annotated[
    tuple[float, float],
    Field(description="(shortest, longest) in days; each draw is uniform in between."),
]


MAX_CUSTOMER_DAYS = 10_000_000
"""A run is held in memory (~350 bytes per event at peak, ~2.9 events per customer-day): this
bound keeps one run under ~10 GB. Larger data sets: several runs with different seeds."""


def _default_mix() -> dict[Typology, float]:
    return dict.fromkeys(SUSPICIOUS_TYPOLOGIES, 1.0)


class SimulationConfig(BaseModel):
    """A simulated bank: its customers, how long it runs, and what crime happens in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int = Field(1000, ge=50, le=5_000_000, description="Customers of the bank.")
    days: int = Field(30, ge=1, le=3660, description="Length of the simulated period.")
    start_date: dt.date = Field(dt.date(2025, 3, 1), description="First simulated day (00:00 UTC).")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Same seed, same output, to the byte.")
    prevalence: float = Field(
        0.005, ge=0.0, le=0.2, description="Target share of suspicious events among all events."
    )
    business_share: float = Field(
        0.08, ge=0.0, le=0.5, description="Share of customers that are businesses."
    )
    mix: dict[Typology, float] = Field(
        default_factory=_default_mix,
        description=(
            "Relative weight of each suspicious typology, as a share of suspicious *events* "
            "(not scenarios). A typology missing here or weighted 0 never occurs."
        ),
    )
    introduce: dict[Typology, int] = Field(
        default_factory=dict,
        description=(
            "Typology -> first day (0-based) it may occur; before that day it is absent. Its "
            "event budget shrinks with the days left, so its daily rate matches the others'."
        ),
    )
    lookalike_ratio: float = Field(
        1.0,
        ge=0.0,
        le=20.0,
        description="Benign look-alike scenarios per suspicious scenario of the typology mimicked.",
    )
    warmup_days: int = Field(
        2,
        ge=0,
        le=60,
        description="Days of clean history before the first scenario, so context exists.",
    )
    dormancy_days: int = Field(
        60,
        ge=3,
        le=720,
        description=(
            "Longest silence before a dormant account wakes up (each draws between half "
            "and all of it); capped at 60% of the run."
        ),
    )
    chargeback_delay_days: DayRange = Field(
        (1.5, 20.0),
        description=(
            "Card fraud: the 5th and 95th percentiles of how long after the fraud its "
            "chargeback arrives; log-normal in between (most cardholders dispute within days "
            "of noticing, a tail takes weeks)."
        ),
    )
    case_delay_days: DayRange = Field(
        (20.0, 90.0), description="AML: a confirmed case arrives this long after the scheme."
    )

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if self.customers * self.days > MAX_CUSTOMER_DAYS:
            raise ValueError(
                f"customers x days = {self.customers * self.days:,} is over the in-memory "
                f"limit of {MAX_CUSTOMER_DAYS:,}; make several runs with different seeds"
            )
        if Typology.LEGITIMATE in self.mix or Typology.LEGITIMATE in self.introduce:
            raise ValueError("'legitimate' is not a typology that can be injected")
        if any(weight < 0 for weight in self.mix.values()):
            raise ValueError("typology weights must be >= 0")
        if self.prevalence > 0 and not any(weight > 0 for weight in self.mix.values()):
            raise ValueError("prevalence > 0 but every typology is weighted 0 or excluded")
        for typology, day in self.introduce.items():
            if not 0 <= day < self.days:
                raise ValueError(f"introduce {typology.value}@{day}: day is outside the run")
        for name in ("chargeback_delay_days", "case_delay_days"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name}: need 0 <= shortest <= longest, got ({low}, {high})")
        return self

    def weight(self, typology: Typology) -> float:
        return self.mix.get(typology, 0.0)

    def first_day(self, typology: Typology) -> int:
        """The first day a scenario of ``typology`` may start on."""
        return max(self.introduce.get(typology, 0), min(self.warmup_days, self.days - 1))

    def canonical_json(self) -> bytes:
        """The configuration as sorted-key JSON: what the manifest records and the tag hashes."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    @property
    def run_tag(self) -> str:
        """Eight hex digits naming this exact configuration.

        Event and label ids carry it, so two different runs produced into the same topic can
        never collide on ids (downstream de-duplicates by id), while the same run reproduces
        the same ids.
        """
        return hashlib.sha256(self.canonical_json()).hexdigest()[:8]


def parse_typology(name: str) -> Typology:
    try:
        typology = Typology(name.strip())
    except ValueError:
        known = ", ".join(t.value for t in SUSPICIOUS_TYPOLOGIES)
        raise SimulationConfigError(f"unknown typology {name!r}; known: {known}") from None
    if typology is Typology.LEGITIMATE:
        raise SimulationConfigError("'legitimate' is not a typology that can be injected")
    return typology


def parse_mix(text: str) -> dict[Typology, float]:
    """``"structuring=2,card_testing=0.5"`` -> weights for the typologies named."""
    weights: dict[Typology, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise SimulationConfigError(f"--mix item {item!r} is not TYPOLOGY=WEIGHT")
        try:
            weight = float(value)
        except ValueError:
            raise SimulationConfigError(f"--mix weight {value!r} is not a number") from None
        if not weight >= 0:
            raise SimulationConfigError(f"--mix weight for {name} must be >= 0")
        weights[parse_typology(name)] = weight
    return weights


def parse_introduce(items: list[str]) -> dict[Typology, int]:
    """``["round_tripping@15"]`` -> {round_tripping: 15}."""
    days: dict[Typology, int] = {}
    for item in items:
        name, sep, day = item.partition("@")
        if not sep or not day.strip().isdigit():
            raise SimulationConfigError(f"--introduce {item!r} is not TYPOLOGY@DAY")
        days[parse_typology(name)] = int(day)
    return days


def parse_day_range(text: str) -> tuple[float, float]:
    """``"5-45"`` -> (5.0, 45.0); a single number means exactly that many days."""
    low, sep, high = text.partition("-")
    try:
        bounds = (float(low), float(high if sep else low))
    except ValueError:
        raise SimulationConfigError(f"{text!r} is not a day range like 5-45") from None
    return bounds


def build_config(
    *,
    mix: str | None = None,
    exclude: list[str] | None = None,
    introduce: list[str] | None = None,
    **fields: object,
) -> SimulationConfig:
    """A config from CLI-style text options: ``--mix`` overrides the listed typologies' default
    weight of 1 (others keep theirs), ``--exclude`` sets weights to 0."""
    weights = _default_mix()
    if mix:
        weights.update(parse_mix(mix))
    for name in exclude or []:
        weights[parse_typology(name)] = 0.0
    try:
        return SimulationConfig.model_validate(
            {**fields, "mix": weights, "introduce": parse_introduce(introduce or [])}
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise SimulationConfigError(str(exc)) from None
