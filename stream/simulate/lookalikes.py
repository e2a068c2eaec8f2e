"""Benign look-alikes: legitimate stories that share the surface of a typology.

Each typology has at least one, injected about as often as the typology itself (see
``SimulationConfig.lookalike_ratio``), so no single-event feature separates fraud from honest
customers: a big electronics purchase looks like a stolen card, travel with a new phone looks
like an account takeover, a cash business's takings look like structuring. What still tells them
apart is history (the same device as always, a beneficiary paid before, deposits above the
threshold too), which is what the model has to learn from the narratives.

All events here are legitimate (typology ``legitimate``); they carry a scenario id and the kind
``lookalike:<name>`` in the truth file.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from schemas import Typology
from stream.simulate import catalog as cat
from stream.simulate.catalog import ROLE_CUSTOMER as ME
from stream.simulate.lookalikes_money import (
    back_from_abroad,
    cash_business_deposits,
    cash_windfall,
    family_remittance,
    friend_repayment,
    income_paid_on,
    investment_funding,
    marketplace_seller,
    rent_split,
    under_round_invoices,
)
from stream.simulate.population import ONLINE, STORE, SUBSCRIPTION
from stream.simulate.scenario import Context, Injector, Party

NIGHT = np.r_[np.full(6, 1.0), np.zeros(18)] / 6  # merchants' renewal batches run at night UTC


def subscription_renewals(ctx: Context) -> int:
    """A handful of small renewals at different digital merchants in one night (card testing's
    look-alike): small amounts, many merchants, minutes apart, no device."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:subscription_renewals")
    first_of_month = [
        d
        for d in range(ctx.first_day, ctx.world.days)
        if (ctx.world.config.start_date + dt.timedelta(days=d)).day == 1
    ]
    day = first_of_month[0] if first_of_month and rng.random() < 0.7 else ctx.start_day(1)
    t = ctx.at(day, NIGHT)
    device = ctx.own_device(cust) if rng.random() < 0.15 else (-1, -1)
    for _ in range(int(rng.integers(4, 11))):
        ctx.card_event(
            scenario,
            t=t,
            cust=cust,
            merchant=ctx.merchant(SUBSCRIPTION),
            usd=float(rng.choice([0.99, 1.99, 2.99, 4.99, 9.99, 14.99])),
            role=ME,
            device=device,
        )
        t = ctx.later(t, 0.5, 20)
    return scenario.close()


def large_purchase(ctx: Context) -> int:
    """A one-off big purchase (furniture, a trip, a laptop), sometimes with a large transfer to
    a new beneficiary (a car dealer, a builder), from the customer's own device."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:large_purchase")
    device = ctx.own_device(cust)
    t = ctx.at(ctx.start_day(1), cat.HOURS_SHOPPING)
    big_ticket = np.array([cat.MCC_INDEX[m] for m in cat.BIG_TICKET_MCCS])
    ctx.card_event(
        scenario,
        t=t,
        cust=cust,
        merchant=ctx.merchant(ONLINE if rng.random() < 0.5 else STORE, mccs=big_ticket),
        usd=float(rng.uniform(800, 6_000)),
        role=ME,
        device=device,
    )
    if rng.random() < 0.4:
        usd = float(rng.uniform(2_000, 15_000))
        scenario.transfer(
            t=ctx.days_later(t, 0, 2, cat.HOURS_OFFICE),
            sender=Party(customer=cust),
            receiver=ctx.accounts(1)[0],
            usd=usd,
            channel=cat.WIRE if usd >= 10_000 else cat.ACH,
            sender_role=ME,
            receiver_role=ME,
            device=device,
            memo=int(rng.choice([cat.MEMO["INVOICE"], cat.MEMO["DEPOSIT"], -1])),
        )
    return scenario.close()


def travel(ctx: Context) -> int:
    """A trip abroad: card spend in another country and currency, often from a new phone, and
    a transfer to a new beneficiary (a holiday rental) - account takeover's look-alike."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:travel")
    places = [c for c in cat.COUNTRIES_TABLE if c.travel > 0]
    weights = np.array([c.travel for c in places])
    country = cat.COUNTRY_INDEX[
        places[int(rng.choice(len(places), p=weights / weights.sum()))].code
    ]
    device = ctx.fresh_device() if rng.random() < 0.6 else ctx.own_device(cust)
    length = float(rng.uniform(3, 10))
    day0 = ctx.start_day(length)
    rental = Party(
        account=int(ctx.world.new_accounts(1, country if rng.random() < 0.6 else cat.US)[0])
    )
    scenario.transfer(
        t=ctx.at(day0, cat.HOURS_ONLINE),
        sender=Party(customer=cust),
        receiver=rental,
        usd=float(rng.uniform(200, 3_000)),
        channel=cat.WIRE if ctx.world.counterparties.countries[rental.cp] != cat.US else cat.P2P,
        sender_role=ME,
        receiver_role=ME,
        device=device,
        memo=int(rng.choice([cat.MEMO["DEPOSIT"], -1])),
    )
    for day in np.arange(day0, day0 + length):
        for _ in range(int(rng.integers(2, 7))):
            merchant = ctx.merchant(STORE, country=country)
            ctx.card_event(
                scenario,
                t=ctx.at(float(day), cat.HOURS_SHOPPING),
                cust=cust,
                merchant=merchant,
                usd=ctx.typical_usd(cust, merchant) * float(rng.uniform(0.8, 2.0)),
                role=ME,
            )
    return scenario.close()


def gift_run(ctx: Context) -> int:
    """A legitimate afternoon of electronics and gift cards (the stolen card's look-alike)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:gift_run")
    device = ctx.own_device(cust)
    online = rng.random() < 0.6
    t = ctx.at(ctx.start_day(1), cat.HOURS_SHOPPING)
    for _ in range(int(rng.integers(2, 6))):
        merchant = ctx.merchant(
            ONLINE if online else STORE,
            mccs=cat.RISKY_MCC_CODES,
            country=None if online else cat.US,
        )
        median = float(cat.MCC_MEDIAN_USD[ctx.world.merchants.mcc[merchant]])
        ctx.card_event(
            scenario,
            t=t,
            cust=cust,
            merchant=merchant,
            usd=float(np.clip(median * rng.uniform(1.0, 3.0), 50, 1_500)),
            role=ME,
            device=device,
        )
        t = ctx.later(t, 5, 50)
    return scenario.close()


def event_venue(ctx: Context) -> int:
    """A fair or concert: one terminal takes unusually large payments from many different
    customers over a few days (the compromised terminal's look-alike)."""
    rng, m = ctx.rng, ctx.world.merchants
    members, weights = m.pool(STORE, cat.US)
    merchant = int(members[rng.choice(len(members), p=weights)])
    terminal = int(m.first_terminal[merchant] + rng.integers(0, m.n_terminals[merchant]))
    window = float(rng.uniform(1, 3))
    day0 = ctx.start_day(window)
    visitors = ctx.bystanders(int(rng.integers(15, 51)))
    scenario = ctx.scenario("lookalike:event_venue")
    for visitor in visitors:
        for _ in range(1 if rng.random() < 0.7 else 2):
            scenario.event(
                t=ctx.at(day0 + float(rng.uniform(0, window)), cat.HOURS_SHOPPING),
                cust=int(visitor),
                channel=cat.CARD,
                direction=cat.OUTBOUND,
                usd=ctx.typical_usd(int(visitor), merchant) * float(rng.uniform(2.0, 4.0)),
                cp=int(m.cp[merchant]),
                terminal=terminal,
                mcc=int(m.mcc[merchant]),
                role=ME,
            )
    return scenario.close()


def terminal_with_one_chargeback(ctx: Context) -> int:
    """A busy terminal where one stolen card was used - a genuine fraud, charged back as usual
    - while everything else there stays honest: its regulars keep paying at it in the weeks
    after. One confirmed fraud is not a compromise (the compromised terminal's look-alike)."""
    rng, m = ctx.rng, ctx.world.merchants
    stores = ctx.world.customers.stores
    regulars = np.bincount(stores.ravel(), minlength=len(m.kind))
    candidates = np.flatnonzero((m.kind == STORE) & (m.country == cat.US) & (regulars >= 5))
    if len(candidates) == 0:
        return 0
    weights = regulars[candidates].astype(np.float64)
    merchant = int(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
    terminal = int(m.first_terminal[merchant] + rng.integers(0, m.n_terminals[merchant]))
    day0 = ctx.start_day(21)
    at_point = {
        "channel": cat.CARD,
        "direction": cat.OUTBOUND,
        "cp": int(m.cp[merchant]),
        "terminal": terminal,
        "mcc": int(m.mcc[merchant]),
    }
    # the fraud is a stolen card's: only where stolen cards occur in this run (an excluded or
    # not yet introduced typology never appears)
    config = ctx.world.config
    if config.weight(Typology.STOLEN_CARD) > 0 and day0 >= config.first_day(Typology.STOLEN_CARD):
        victim = int(ctx.bystanders(1)[0])
        fraud = ctx.scenario("fraud:stolen_card:single", Typology.STOLEN_CARD)
        fraud.event(
            t=ctx.at(day0, cat.HOURS_SHOPPING), cust=victim, role=cat.ROLE_VICTIM,
            usd=ctx.typical_usd(victim, merchant) * float(rng.uniform(3.0, 8.0)), **at_point,
        )  # fmt: skip
        fraud.close()
    honest = ctx.scenario("lookalike:terminal_with_one_chargeback")
    customers = ctx.bystanders(20, among=np.flatnonzero((stores == merchant).any(axis=1)))
    for cust in (int(c) for c in customers):
        honest.event(
            t=ctx.at(day0 + float(rng.uniform(2, 21)), cat.HOURS_SHOPPING), cust=cust, role=ME,
            usd=ctx.typical_usd(cust, merchant) * float(rng.uniform(0.6, 1.5)), **at_point,
        )  # fmt: skip
    return honest.close()


LOOKALIKES: dict[Typology, tuple[Injector, ...]] = {
    Typology.CARD_TESTING: (subscription_renewals,),
    Typology.ACCOUNT_TAKEOVER: (travel, large_purchase),
    Typology.STOLEN_CARD: (gift_run, large_purchase),
    Typology.COMPROMISED_TERMINAL: (event_venue, terminal_with_one_chargeback),
    Typology.STRUCTURING: (cash_windfall, cash_business_deposits, under_round_invoices),
    Typology.MULE_FAN_IN_OUT: (marketplace_seller, rent_split),  # and payroll, in the background
    Typology.ROUND_TRIPPING: (friend_repayment,),
    Typology.PASS_THROUGH: (income_paid_on,),
    Typology.DORMANT_REACTIVATION: (back_from_abroad,),
    Typology.HIGH_RISK_JURISDICTION: (family_remittance,),
    Typology.APP_SCAM: (investment_funding, family_remittance),
}
"""The benign stories that mimic each typology, used in turn."""
