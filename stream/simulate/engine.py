"""The simulation: background, then scenarios to the prevalence target, then one ordered stream.

Pure: a :class:`SimulationConfig` in, a :class:`Simulation` (columns and string tables) out;
writing files or producing to Kafka is :mod:`writers`' job.

Ordering: events are sorted by (event time, customer, generation order), so each customer's
events are in event-time order, the stream as a whole is ordered by event time, and ties are
broken the same way in every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from schemas import Typology
from stream.simulate import catalog as cat
from stream.simulate.behaviour import GENERATORS, generate_background
from stream.simulate.config import SimulationConfig
from stream.simulate.frame import Column, Frame, FrameBuilder
from stream.simulate.fraud import account_takeover, card_testing, compromised_terminal, stolen_card
from stream.simulate.laundering import (
    dormant_reactivation,
    high_risk_jurisdiction,
    mule_fan_in_out,
    pass_through,
    round_tripping,
    structuring,
)
from stream.simulate.lookalikes import LOOKALIKES
from stream.simulate.memos import personalise
from stream.simulate.population import DAY_MS, World, build_world
from stream.simulate.scams import app_scam
from stream.simulate.scenario import Context, Injector

log = logging.getLogger(__name__)

# Order matters only in that earlier typologies pick their customers first. Dormant accounts go
# first: once silenced, a customer is kept out of everyone else's scenarios.
INJECTORS: dict[Typology, Injector] = {
    Typology.DORMANT_REACTIVATION: dormant_reactivation,
    Typology.ROUND_TRIPPING: round_tripping,
    Typology.MULE_FAN_IN_OUT: mule_fan_in_out,
    Typology.PASS_THROUGH: pass_through,
    Typology.STRUCTURING: structuring,
    Typology.HIGH_RISK_JURISDICTION: high_risk_jurisdiction,
    Typology.ACCOUNT_TAKEOVER: account_takeover,
    Typology.CARD_TESTING: card_testing,
    Typology.STOLEN_CARD: stolen_card,
    Typology.COMPROMISED_TERMINAL: compromised_terminal,
    Typology.APP_SCAM: app_scam,
}
CARD_FRAUD: frozenset[Typology] = frozenset(
    {
        Typology.CARD_TESTING,
        Typology.ACCOUNT_TAKEOVER,
        Typology.STOLEN_CARD,
        Typology.COMPROMISED_TERMINAL,
    }
)
"""Typologies whose labels arrive as chargebacks."""
REPORTED_FRAUD: frozenset[Typology] = frozenset({Typology.APP_SCAM})
"""Typologies whose labels arrive as the customer's fraud report, as soon as chargebacks (the
customer notices); the others arrive as confirmed AML cases, weeks later."""

_MAX_FAILURES = 3  # consecutive injector refusals before a typology is given up for this run


@dataclass
class Plan:
    """What was asked and what came out, per typology (recorded in the manifest)."""

    budget_events: dict[Typology, int] = field(default_factory=dict)
    scenarios: dict[Typology, int] = field(default_factory=dict)
    events: dict[Typology, int] = field(default_factory=dict)
    lookalike_scenarios: dict[str, int] = field(default_factory=dict)
    skipped: dict[Typology, str] = field(default_factory=dict)


@dataclass
class Labels:
    """Ground truth as it would reach the bank: one label per suspicious event."""

    rows: npt.NDArray[np.intp]  # event row (in the sorted frame) each label is about
    label_ms: Column

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Simulation:
    config: SimulationConfig
    world: World
    events: Frame  # sorted; row i gets event id ev-<tag>-<i>
    labels: Labels  # sorted by label time
    plan: Plan

    @property
    def suspicious(self) -> npt.NDArray[np.bool_]:
        suspicious: npt.NDArray[np.bool_] = self.events["typology"] != 0
        return suspicious


def _scenario_budgets(config: SimulationConfig, background: int) -> dict[Typology, float]:
    """Suspicious events wanted per typology: the prevalence target, shared by weight, and
    scaled down for a typology introduced late so its daily rate matches the others'."""
    total = config.prevalence / (1 - config.prevalence) * background
    weights = {t: config.weight(t) for t in INJECTORS}
    weight_sum = sum(weights.values()) or 1.0
    return {
        t: total * w / weight_sum * (config.days - config.introduce.get(t, 0)) / config.days
        for t, w in weights.items()
    }


def _inject(
    world: World,
    out: FrameBuilder,
    background: int,
    plan: Plan,
    on_step: Callable[[], object] = lambda: None,
) -> None:
    config = world.config
    for typology, budget in _scenario_budgets(config, background).items():
        index = cat.code(cat.TYPOLOGIES, typology)
        ctx = Context(world, out, np.random.default_rng([config.seed, 3, index]), 0)
        ctx.first_day = config.first_day(typology)
        plan.budget_events[typology] = round(budget)
        made = events = failures = 0
        if budget > 0 and config.prevalence > 0:
            # Stop when the next scenario would more likely overshoot the budget than not,
            # but always make one: a typology that is switched on must appear.
            while made == 0 or budget - events > 0.5 * events / made:
                added = INJECTORS[typology](ctx)
                if added == 0:
                    failures += 1
                    if failures >= _MAX_FAILURES:
                        break
                    continue
                failures, made, events = 0, made + 1, events + added
            if made == 0:
                plan.skipped[typology] = "not possible with this population or run length"
                log.warning("no %s scenario fits this run; skipped", typology.value)
        plan.scenarios[typology], plan.events[typology] = made, events

        # Look-alikes are legitimate behaviour, so they may appear from the end of the warm-up
        # even for a typology introduced later.
        lookalike_ctx = Context(world, out, np.random.default_rng([config.seed, 4, index]), 0)
        lookalike_ctx.first_day = min(config.warmup_days, config.days - 1)
        # Each look-alike kind as often as the typology itself: several look-alikes of one
        # typology must not dilute each other into rarities.
        for _ in range(round(made * config.lookalike_ratio)):
            for lookalike in LOOKALIKES[typology]:
                lookalike(lookalike_ctx)
        on_step()


def _silence(world: World, frame: Frame) -> npt.NDArray[np.bool_]:
    """Rows to drop: dormant spells, and the events past the end of the run."""
    t, cust = frame["t_ms"], frame["cust"]
    drop = (t < world.start_ms) | (t >= world.end_ms)
    if world.silences:
        quiet_from = np.zeros(world.customers.n, dtype=np.int64)
        quiet_to = np.zeros(world.customers.n, dtype=np.int64)
        keep = np.full(world.customers.n, -2, dtype=np.int64)
        for customer, start, stop, scenario in world.silences:
            quiet_from[customer], quiet_to[customer], keep[customer] = start, stop, scenario
        drop |= (t >= quiet_from[cust]) & (t < quiet_to[cust]) & (frame["scenario"] != keep[cust])
    # A transfer between two customers loses both sides or neither.
    link = frame["link"]
    dropped_links = np.unique(link[drop & (link >= 0)])
    drop |= (link >= 0) & np.isin(link, dropped_links)
    return drop


def _labels(config: SimulationConfig, events: Frame) -> Labels:
    """A chargeback or confirmed case for every suspicious event.

    One delay per victim (or subject) and scenario, counted from that party's last event in
    the scenario: a cardholder disputes all the fraudulent payments at once, and a case closes
    on the whole scheme, not payment by payment.
    """
    rng = np.random.default_rng([config.seed, 5])
    rows = np.flatnonzero(events["typology"] != 0)
    if len(rows) == 0:
        return Labels(rows, np.empty(0, dtype=np.int64))
    group_key = events["scenario"][rows] * config.customers + events["cust"][rows]
    groups, inverse = np.unique(group_key, return_inverse=True)
    last_ms = np.full(len(groups), np.iinfo(np.int64).min)
    np.maximum.at(last_ms, inverse, events["t_ms"][rows])
    typology = np.zeros(len(groups), dtype=np.int64)
    typology[inverse] = events["typology"][rows]
    card = np.isin(typology, [cat.code(cat.TYPOLOGIES, t) for t in CARD_FRAUD | REPORTED_FRAUD])
    case_days = rng.uniform(*config.case_delay_days, size=len(groups))
    delay_days = np.where(card, _chargeback_days(config, rng, len(groups)), case_days)
    delay_ms = (delay_days * DAY_MS).astype(np.int64)
    label_ms = (last_ms + delay_ms)[inverse]
    order = np.lexsort((rows, label_ms))
    return Labels(rows[order], label_ms[order])


def _references(config: SimulationConfig, events: Frame) -> npt.NDArray[np.int64]:
    """Each reference in its writer's phrasing (see ``memos``): a transfer between two
    customers of the bank shows the sender's reference on both sides."""
    memo = personalise(config.seed, config.customers, events["memo"], events["cust"])
    link = events["link"]
    sent = (link >= 0) & (events["direction"] == cat.OUTBOUND)
    received = (link >= 0) & (events["direction"] == cat.INBOUND)
    by_link = dict(zip(link[sent].tolist(), memo[sent].tolist(), strict=True))
    memo[received] = [
        by_link.get(k, m) for k, m in zip(link[received], memo[received], strict=True)
    ]
    return memo


def _chargeback_days(
    config: SimulationConfig, rng: np.random.Generator, n: int
) -> npt.NDArray[np.float64]:
    """Chargeback delays: log-normal with ``chargeback_delay_days`` as its 5th and 95th
    percentiles (a degenerate range gives that delay exactly)."""
    low, high = config.chargeback_delay_days
    if low <= 0 or high <= low:
        return np.full(n, float(high))
    median, sigma = np.sqrt(low * high), np.log(high / low) / (2 * 1.6449)
    return np.asarray(rng.lognormal(np.log(median), sigma, n), dtype=np.float64)


def simulate(config: SimulationConfig, *, progress: bool = False) -> Simulation:
    """Run the whole simulation in memory (``progress``: a bar over its steps, on stderr)."""
    steps = 1 + len(GENERATORS) + len(INJECTORS) + 2
    with tqdm(total=steps, desc="simulating", unit="step", disable=not progress) as bar:
        world = build_world(config)
        bar.update()
        out = FrameBuilder()
        background = generate_background(world, out, bar.update)
        plan = Plan()
        _inject(world, out, background, plan, bar.update)
        for kind in (kind for _, kind in world.scenarios if kind.startswith("lookalike:")):
            plan.lookalike_scenarios[kind] = plan.lookalike_scenarios.get(kind, 0) + 1
        frame = out.build()
        frame = frame.take(~_silence(world, frame))
        order = np.lexsort((np.arange(len(frame)), frame["cust"], frame["t_ms"]))
        events = frame.take(order)
        events.columns["memo"] = _references(config, events)
        bar.update()
        labels = _labels(config, events)
        bar.update()
    log.info(
        "simulated %d events (%d suspicious) for %d customers over %d days",
        len(events),
        int((events["typology"] != 0).sum()),
        config.customers,
        config.days,
    )
    return Simulation(config, world, events, labels, plan)
