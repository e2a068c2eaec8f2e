"""Legitimate background traffic: what customers do when nothing is wrong.

Each generator draws all of one kind of event for the whole population and period at once
(numpy, no per-event Python), from the stable profiles in :mod:`population`: card spend at
favourite merchants with a daily and weekly rhythm, salaries and payroll, rent and bills,
subscriptions, P2P between friends, ATM cash, and business turnover.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np

from stream.simulate import catalog as cat
from stream.simulate.catalog import FloatArray
from stream.simulate.frame import Column, FrameBuilder
from stream.simulate.population import (
    BUSINESS,
    FAVOURITE_SHOPS,
    FAVOURITE_STORES,
    FAVOURITE_WEIGHTS,
    HOUR_MS,
    ONLINE,
    SHOP_WEIGHTS,
    STORE,
    Employers,
    World,
    size_of,
)


# ---- timing helpers ---------------------------------------------------------------------------
def spread(
    world: World, rng: np.random.Generator, rates: FloatArray, weekday: FloatArray
) -> tuple[Column, Column]:
    """(customer, day) of Poisson events at ``rates`` per day, shaped by ``weekday``.

    Drawing each customer's total and then splitting it over the days is the same process as
    one Poisson draw per customer and day, without a customers x days matrix in memory.
    """
    factors = weekday[[(world.weekday(0) + d) % 7 for d in range(world.days)]]
    if factors.sum() == 0:  # e.g. office-hours traffic in a run that is one weekend long
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    totals = rng.poisson(rates * factors.sum())
    customers = np.repeat(np.arange(len(rates), dtype=np.int64), totals)
    days = rng.choice(world.days, size=len(customers), p=factors / factors.sum())
    return customers, days.astype(np.int64)


def clock(world: World, rng: np.random.Generator, days: Column, hours: FloatArray) -> Column:
    """Event times on ``days``, the hour drawn from the 24-hour profile ``hours`` (UTC)."""
    hour = rng.choice(24, size=len(days), p=hours)
    within = rng.integers(0, HOUR_MS, size=len(days))
    return world.start_ms + days * 86_400_000 + hour * HOUR_MS + within


def monthly(world: World, day_of_month: Column) -> tuple[Column, Column]:
    """(entity, day) for each run day whose day of month equals the entity's ``day_of_month``."""
    dates = [world.config.start_date + dt.timedelta(days=d) for d in range(world.days)]
    run_dom = np.array([date.day for date in dates])
    entity, day = np.nonzero(day_of_month.reshape(-1)[:, None] == run_dom[None, :])
    return entity.astype(np.int64), day.astype(np.int64)


def paydays(world: World, payers: Employers) -> Column:
    """(payers x days) booleans: who pays salaries on which day."""
    matrix = np.zeros((len(payers.cp), world.days), dtype=bool)
    entity, day = monthly(world, payers.monthly_day)
    matrix[entity, day] = True
    run_days = np.arange(world.days)
    biweekly = payers.monthly_day < 0
    matrix[biweekly] = ((run_days[None, :] - payers.biweekly_offset[biweekly, None]) % 14) == 0
    return matrix


def own_device(world: World, rng: np.random.Generator, customers: Column) -> tuple[Column, Column]:
    """The customer's usual device and network (the second one about a third of the time)."""
    slot = (rng.random(len(customers)) < 0.3).astype(np.int64)
    slot[world.customers.devices[customers, 1] < 0] = 0
    return world.customers.devices[customers, slot], world.customers.ips[customers, slot]


def usd_to(currency: Column, usd: FloatArray) -> Column:
    return cat.to_minor(usd, currency)


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


def payroll(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """Business payroll runs: one payment per employee within minutes, the fan-out that a mule
    network's fan-out must be told apart from. Each run is a look-alike scenario."""
    c = world.customers
    schedule = paydays(world, world.business_paydays)
    businesses = np.flatnonzero(c.segment == BUSINESS)
    order = np.argsort(c.employer, kind="stable")
    bounds = np.searchsorted(c.employer[order], [businesses, businesses + 1])
    for b, lo, hi in zip(businesses, bounds[0], bounds[1], strict=True):
        staff = order[lo:hi]
        outside = np.arange(c.ext_staff_count[b]) + c.ext_staff_first[b]
        if len(staff) + len(outside) < 2:
            continue
        biweekly = world.business_paydays.monthly_day[b] < 0
        base = np.r_[c.income_usd[staff], 3_800 * np.exp(0.35 * rng.standard_normal(len(outside)))]
        base = base * (12 / 26 if biweekly else 1.0)
        payees = np.r_[staff, outside].astype(np.int64)
        device, ip = own_device(world, rng, np.array([b]))
        for day in np.flatnonzero(schedule[b]):
            scenario = world.add_scenario("lookalike:payroll_fanout")
            start = clock(world, rng, np.array([day]), cat.HOURS_BATCH)[0]
            t = start + np.sort(rng.integers(0, 15 * 60_000, len(payees)))
            usd = base * (1 + 0.015 * rng.standard_normal(len(payees)))
            amount = usd_to(np.full(len(payees), cat.USD), usd)
            links = out.new_links(len(staff))
            out.add(
                t_ms=t,
                cust=b,
                channel=cat.ACH,
                direction=cat.OUTBOUND,
                amount=amount,
                currency=cat.USD,
                cp=payees,
                country=cat.US,
                device=device[0],
                ip=ip[0],
                memo=cat.MEMO["PAYROLL"],
                scenario=scenario,
                link=np.r_[links, np.full(len(outside), -1)],
            )
            out.add(
                t_ms=t[: len(staff)] + 1_000,
                cust=staff,
                channel=cat.ACH,
                direction=cat.INBOUND,
                amount=amount[: len(staff)],
                currency=cat.USD,
                cp=b,
                country=cat.US,
                memo=cat.MEMO["SALARY"],
                scenario=scenario,
                link=links,
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


def cash_deposits(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """Cash paid in at a branch: rare for retail; routine for cash-taking businesses, whose
    takings often land near the reporting threshold (structuring's main look-alike)."""
    c = world.customers
    business_rate = np.where(c.cash_intensive, 0.5, 0.0)
    retail_rate = np.where(c.segment == BUSINESS, 0.0, 0.01)
    cust, day = spread(world, rng, business_rate + retail_rate, cat.WEEKDAY_OFFICE)
    takings = c.cash_intensive[cust]
    usd = np.where(
        takings,
        np.clip(
            0.12 * c.income_usd[cust] * np.exp(0.55 * rng.standard_normal(len(cust))), 200, 30_000
        ),
        np.clip(300 * np.exp(0.8 * rng.standard_normal(len(cust))), 20, 5_000),
    )
    branch = np.where(
        rng.random(len(cust)) < 0.9,
        c.branch[cust],
        world.places.branches[rng.integers(0, len(world.places.branches), len(cust))],
    )
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_OFFICE),
        cust=cust,
        channel=cat.CASH,
        direction=cat.INBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), np.rint(usd / 10) * 10),
        currency=cat.USD,
        cp=branch,
        country=cat.US,
        memo=np.where(takings, cat.MEMO["DEPOSIT"], -1),
    )


def business_flows(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """Invoices paid by clients (many distinct payers: a fan-in look-alike), card settlements
    from the acquirer, and supplier invoices, some priced just under round numbers."""
    c, places = world.customers, world.places
    is_business = c.segment == BUSINESS
    size = np.where(is_business, size_of(c.income_usd), 0.0)
    regular = places.clients[rng.integers(0, len(places.clients), (c.n, 10))]

    cust, day = spread(world, rng, 5.0 * np.sqrt(size), cat.WEEKDAY_OFFICE)
    client = np.where(
        rng.random(len(cust)) < 0.7,
        regular[cust, rng.integers(0, 10, len(cust))],
        places.clients[rng.integers(0, len(places.clients), len(cust))],
    )
    usd = (
        c.income_usd[cust]
        / (5.0 * np.sqrt(size[cust]) * 22)
        * np.exp(0.8 * rng.standard_normal(len(cust)) - 0.32)
    )
    invoice_memos = np.array([-1, cat.MEMO["INVOICE"], cat.MEMO["SERVICES"]])
    country = world.counterparties.country_of(client)
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_OFFICE),
        cust=cust,
        channel=np.where((usd > 5_000) | (country != cat.US), cat.WIRE, cat.ACH),
        direction=cat.INBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), np.maximum(usd, 10)),
        currency=cat.USD,
        cp=client,
        country=country,
        memo=rng.choice(invoice_memos, len(cust)),
    )

    accepts_cards = c.cash_intensive | (is_business & (np.arange(c.n) % 5 < 2))
    cust, day = spread(world, rng, accepts_cards.astype(np.float64), cat.WEEKDAY_FLAT)
    usd = c.income_usd[cust] / 40 * np.exp(0.3 * rng.standard_normal(len(cust)))
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_BATCH),
        cust=cust,
        channel=cat.ACH,
        direction=cat.INBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), usd),
        currency=cat.USD,
        cp=places.acquirers[cust % len(places.acquirers)],
        country=cat.US,
    )

    cust, day = spread(world, rng, 0.5 * np.sqrt(size), cat.WEEKDAY_OFFICE)
    usd = 0.1 * c.income_usd[cust] * np.exp(0.7 * rng.standard_normal(len(cust)))
    under_round = (rng.random(len(cust)) < 0.25) & (usd > 1_000)
    usd = np.where(
        under_round, np.ceil(usd / 1_000) * 1_000 - rng.choice([5, 10, 50], len(cust)), usd
    )
    device, ip = own_device(world, rng, cust)
    supplier = c.suppliers[cust, rng.integers(0, 4, len(cust))]
    country = world.counterparties.country_of(supplier)
    out.add(
        t_ms=clock(world, rng, day, cat.HOURS_OFFICE),
        cust=cust,
        channel=np.where((usd > 10_000) | (country != cat.US), cat.WIRE, cat.ACH),
        direction=cat.OUTBOUND,
        amount=usd_to(np.full(len(cust), cat.USD), usd),
        currency=cat.USD,
        cp=supplier,
        country=country,
        device=device,
        ip=ip,
        memo=cat.MEMO["INVOICE"],
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
