"""Legitimate background traffic: what customers do when nothing is wrong.

Each generator draws all of one kind of event for the whole population and period at once
(numpy, no per-event Python), from the stable profiles in :mod:`population`: card spend at
favourite merchants with a daily and weekly rhythm, salaries, rent and bills, subscriptions,
P2P between friends, ATM cash, the occasional large transfer; business traffic is in
:mod:`business`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stream.simulate import catalog as cat
from stream.simulate.business import business_flows, cash_deposits, payroll
from stream.simulate.frame import FrameBuilder
from stream.simulate.population import (
    BUSINESS,
    FAVOURITE_SHOPS,
    FAVOURITE_STORES,
    FAVOURITE_WEIGHTS,
    ONLINE,
    SHOP_WEIGHTS,
    STORE,
    World,
)
from stream.simulate.rhythm import clock, monthly, own_device, paydays, spread, usd_to


# ---- card spend -------------------------------------------------------------------------------
def card_present(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    c, m = world.customers, world.merchants
    cust, day = spread(world, rng, c.card_rate, cat.WEEKDAY_SHOPPING)
    merchant = c.stores[cust, rng.choice(FAVOURITE_STORES, len(cust), p=FAVOURITE_WEIGHTS)]
    # One purchase in eight is somewhere new (only at home: travel is a scenario of its own).
    members, weights = m.pool(STORE, cat.US)
    explore = (rng.random(len(cust)) < 0.12) & (c.home[cust] == cat.US)
    merchant[explore] = members[rng.choice(len(members), int(explore.sum()), p=weights)]
    mcc = m.mcc[merchant]
    country = m.country[merchant]
    currency = cat.COUNTRY_CURRENCY[country]
    usd = (
        cat.MCC_MEDIAN_USD[mcc]
        * c.spend_scale[cust]
        * np.exp(cat.MCC_SIGMA[mcc] * rng.standard_normal(len(cust)))
    )
    terminal = m.first_terminal[merchant] + (
        rng.random(len(cust)) * m.n_terminals[merchant]
    ).astype(np.int64)
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_SHOPPING),
        cust=cust,
        channel=cat.CARD,
        direction=cat.OUTBOUND,
        amount=usd_to(currency, np.maximum(usd, 0.5)),
        currency=currency,
        cp=m.cp[merchant],
        country=country,
        terminal=terminal,
        mcc=mcc,
    )


def online(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    c, m = world.customers, world.merchants
    cust, day = spread(world, rng, c.online_rate, cat.WEEKDAY_FLAT)
    merchant = c.shops[cust, rng.choice(FAVOURITE_SHOPS, len(cust), p=SHOP_WEIGHTS)]
    members, weights = m.pool(ONLINE)
    explore = rng.random(len(cust)) < 0.25
    merchant[explore] = members[rng.choice(len(members), int(explore.sum()), p=weights)]
    mcc, country = m.mcc[merchant], m.country[merchant]
    currency = cat.COUNTRY_CURRENCY[country]
    usd = (
        cat.MCC_MEDIAN_USD[mcc]
        * c.spend_scale[cust]
        * np.exp(cat.MCC_SIGMA[mcc] * rng.standard_normal(len(cust)))
    )
    # The bank sees a device for wallet and 3-D Secure payments only, not for every order.
    device, ip = own_device(world, rng, cust)
    unseen = rng.random(len(cust)) < 0.45
    device[unseen], ip[unseen] = -1, -1
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_ONLINE),
        cust=cust,
        channel=cat.ECOM,
        direction=cat.OUTBOUND,
        amount=usd_to(currency, np.maximum(usd, 0.5)),
        currency=currency,
        cp=m.cp[merchant],
        country=country,
        mcc=mcc,
        device=device,
        ip=ip,
    )


def atm_cash(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    c = world.customers
    cust, day = spread(world, rng, c.atm_rate, cat.WEEKDAY_SHOPPING)
    atm = c.atms[cust, (rng.random(len(cust)) < 0.3).astype(np.int64)]
    elsewhere = rng.random(len(cust)) < 0.15
    atm[elsewhere] = world.places.atms[
        rng.integers(0, len(world.places.atms), int(elsewhere.sum()))
    ]
    notes = rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 15, 20], len(cust))
    usd = 20.0 * np.maximum(1, np.rint(notes * np.minimum(c.spend_scale[cust], 2.0)))
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_DAYTIME),
        cust=cust,
        channel=cat.ATM_CH,
        direction=cat.OUTBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), usd),
        currency=cat.USD,
        cp=atm,
        country=cat.US,
    )


# ---- income and regular payments --------------------------------------------------------------
def salaries(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """Salaries from outside employers (payroll inside the bank is :func:`payroll`)."""
    c = world.customers
    employees = np.flatnonzero(c.ext_employer >= 0)
    schedule = paydays(world, world.employers)[c.ext_employer[employees]]
    row, day = np.nonzero(schedule)
    cust = employees[row]
    employer = c.ext_employer[cust]
    per_month = np.where(world.employers.monthly_day[employer] < 0, 26 / 12, 1.0)
    usd = c.income_usd[cust] / per_month * (1 + 0.02 * rng.standard_normal(len(cust)))
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_BATCH),
        cust=cust,
        channel=cat.ACH,
        direction=cat.INBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), usd),
        currency=cat.USD,
        cp=world.employers.cp[employer],
        country=cat.US,
        memo=cat.MEMO["SALARY"],
    )


def housing(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    c = world.customers
    payers = np.flatnonzero(c.housing_cp >= 0)
    row, day = monthly(world, c.housing_day[payers])
    cust = payers[row]
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_BATCH),
        cust=cust,
        channel=cat.ACH,
        direction=cat.OUTBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), c.housing_usd[cust]),
        currency=cat.USD,
        cp=c.housing_cp[cust],
        country=cat.US,
        memo=cat.MEMO["RENT"],
    )


def bills_and_subscriptions(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    c, m = world.customers, world.merchants
    for merchants, usd, days, channel, noise in (
        (c.bills, c.bill_usd, c.bill_day, cat.ACH, 0.08),
        (c.subscriptions, c.subscription_usd, c.subscription_day, cat.ECOM, 0.0),
    ):
        entity, day = monthly(world, np.where(merchants >= 0, days, 0))
        cust, slot = np.divmod(entity, merchants.shape[1])
        merchant = merchants[cust, slot]
        amount_usd = usd[cust, slot] * (1 + noise * rng.standard_normal(len(cust)))
        out.add(
            t_ms=clock(world, rng, day, cat.HOURS_BATCH),
            cust=cust,
            channel=channel,
            direction=cat.OUTBOUND,
            amount=usd_to(np.full(len(cust), cat.USD), np.maximum(amount_usd, 1.0)),
            currency=cat.USD,
            cp=m.cp[merchant],
            country=m.country[merchant],
            mcc=m.mcc[merchant],
        )


# ---- money between people ---------------------------------------------------------------------
def p2p(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """P2P payments to friends; between two customers of the bank both sides appear."""
    c = world.customers
    cust, day = spread(world, rng, c.p2p_rate, cat.WEEKDAY_SHOPPING)
    usd = np.rint(np.clip(40 * np.exp(0.8 * rng.standard_normal(len(cust))), 5, 1_500))
    # A few are large (a share of the rent, a used car, a loan): P2P of thousands happens.
    large = rng.random(len(cust)) < 0.03
    usd[large] = np.rint(np.exp(rng.uniform(np.log(300), np.log(4_000), int(large.sum()))))
    inside = rng.random(len(cust)) < 0.6
    friend = np.where(
        inside,
        c.friends[cust, rng.integers(0, 3, len(cust))],
        c.ext_friends[cust, rng.integers(0, 2, len(cust))],
    )
    inside &= friend != cust
    device, ip = own_device(world, rng, cust)
    memo_choices = np.array([-1, -1, cat.MEMO["THANKS"], cat.MEMO["DINNER"], cat.MEMO["GIFT"]])
    memo = np.where(
        rng.random(len(cust)) < 0.03, cat.MEMO["LOAN"], rng.choice(memo_choices, len(cust))
    )
    t = clock(world, rng, day, cat.HOURS_DAYTIME)
    amount = usd_to(np.full(len(cust), cat.USD), usd)
    links = np.full(len(cust), -1, dtype=np.int64)
    links[inside] = out.new_links(int(inside.sum()))
    # A friend at another bank is ext_friends[...]; a friend here is paid to their account,
    # which is counterparty number == customer number.
    out.add(
        t_ms=t,
        cust=cust,
        channel=cat.P2P,
        direction=cat.OUTBOUND,
        amount=amount,
        currency=cat.USD,
        cp=friend,
        country=cat.US,
        device=device,
        ip=ip,
        memo=memo,
        link=links,
    )
    out.add(
        t_ms=t[inside] + rng.integers(200, 3_000, int(inside.sum())),
        cust=friend[inside],
        channel=cat.P2P,
        direction=cat.INBOUND,
        amount=amount[inside],
        currency=cat.USD,
        cp=cust[inside],
        country=cat.US,
        memo=memo[inside],
        link=links[inside],
    )


def crypto(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    c = world.customers
    cust, day = spread(world, rng, c.crypto_rate, cat.WEEKDAY_FLAT)
    selling = rng.random(len(cust)) < 0.2
    usd = np.clip(200 * np.exp(0.9 * rng.standard_normal(len(cust))), 20, 8_000)
    # some are investors moving thousands at a time
    big = rng.random(len(cust)) < 0.12
    usd[big] = np.exp(rng.uniform(np.log(1_000), np.log(40_000), int(big.sum())))
    device, ip = own_device(world, rng, cust)
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_ONLINE),
        cust=cust,
        channel=cat.CRYPTO,
        direction=np.where(selling, cat.INBOUND, cat.OUTBOUND),
        amount=usd_to(np.full(len(cust), cat.USD), usd),
        currency=cat.USD,
        cp=c.exchange[cust],
        country=cat.US,
        device=np.where(selling, -1, device),
        ip=np.where(selling, -1, ip),
    )


def large_transfers(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """The occasional big money move: to or from the customer's own account at another bank
    (savings, brokerage; a business's treasury or loan account), a one-off payee (car dealer,
    lawyer, builder, tuition) or payer (a sale, an inheritance), a few of them abroad. About
    one every six weeks for a private customer, every two weeks for a business.

    These make a large wire or ACH in or out of an account ordinary, which is what the
    laundering typologies must be told apart from by history, not by amount or channel.
    """
    c = world.customers
    business = c.segment == BUSINESS
    cust, day = spread(world, rng, np.where(business, 1 / 14, 1 / 45), cat.WEEKDAY_OFFICE)
    n = len(cust)
    inbound = rng.random(n) < 0.45
    own = rng.random(n) < 0.55  # their own account elsewhere, the same one every time
    abroad = ~own & (rng.random(n) < 0.12)
    foreign = np.array([cat.COUNTRY_INDEX[x] for x in cat.DIASPORA_COUNTRIES])
    countries = np.where(abroad, foreign[rng.integers(0, len(foreign), n)], cat.US)
    one_off = world.new_accounts(int((~own).sum()), countries[~own])
    cp = c.own_elsewhere[cust].copy()
    cp[~own] = one_off
    scale = np.where(own, 0.8, 0.3) * c.income_usd[cust]
    scale = np.where(business[cust], scale, np.where(own, scale, 6_000.0))
    usd = np.clip(scale * np.exp(1.1 * rng.standard_normal(n)), 500, 400_000)
    usd = np.where(rng.random(n) < 0.4, np.rint(usd / 100) * 100, usd)  # round sums are common
    device, ip = own_device(world, rng, cust)
    memos = np.array(
        [-1, -1, -1]
        + [cat.MEMO[m] for m in ("SAVINGS", "DEPOSIT", "INVOICE", "SERVICES", "LOAN", "GIFT")]
        + [cat.MEMO["FAMILY SUPPORT"]]
    )
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_DAYTIME),
        cust=cust,
        channel=np.where((usd >= 10_000) | abroad | (rng.random(n) < 0.4), cat.WIRE, cat.ACH),
        direction=np.where(inbound, cat.INBOUND, cat.OUTBOUND),
        amount=usd_to(np.full(n, cat.USD), usd),
        currency=cat.USD,
        cp=cp,
        country=world.counterparties.country_of(cp),
        device=np.where(inbound, -1, device),
        ip=np.where(inbound, -1, ip),
        memo=rng.choice(memos, n),
    )


GENERATORS = (
    card_present,
    online,
    atm_cash,
    salaries,
    payroll,
    housing,
    bills_and_subscriptions,
    p2p,
    crypto,
    cash_deposits,
    business_flows,
    large_transfers,
)


def generate_background(
    world: World, out: FrameBuilder, on_step: Callable[[], object] = lambda: None
) -> int:
    """All legitimate background events of the run; returns how many were added.

    ``on_step`` is called after each kind of traffic (progress reporting)."""
    before = out.rows
    for index, generator in enumerate(GENERATORS):
        # One random stream per generator: editing one kind of traffic leaves the others as
        # they were, which keeps diffs between versions of the simulator readable.
        generator(world, np.random.default_rng([world.config.seed, 2, index]), out)
        on_step()
    return out.rows - before
