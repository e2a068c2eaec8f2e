"""Business customers' background: payroll runs, client invoices, card settlements, supplier
invoices and cash takings."""

from __future__ import annotations

import numpy as np

from stream.simulate import catalog as cat
from stream.simulate.frame import FrameBuilder
from stream.simulate.population import BUSINESS, World, size_of
from stream.simulate.rhythm import clock, own_device, paydays, spread, usd_to


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


def cash_deposits(world: World, rng: np.random.Generator, out: FrameBuilder) -> None:
    """Cash paid in at a branch: rare for retail; routine for cash-taking businesses, whose
    takings often land near the reporting threshold (structuring's main look-alike)."""
    c = world.customers
    business_rate = np.where(c.cash_intensive, 0.5, 0.0)
    retail_rate = np.where(c.segment == BUSINESS, 0.0, 0.015)
    cust, day = spread(world, rng, business_rate + retail_rate, cat.WEEKDAY_OFFICE)
    takings = c.cash_intensive[cust]
    usd = np.where(
        takings,
        np.clip(
            0.12 * c.income_usd[cust] * np.exp(0.55 * rng.standard_normal(len(cust))), 200, 30_000
        ),
        # heavy tail: a sold car or saved-up cash now and then lands near the threshold
        np.clip(400 * np.exp(1.2 * rng.standard_normal(len(cust))), 20, 15_000),
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

    cust, day = spread(world, rng, 3.0 * np.sqrt(size), cat.WEEKDAY_OFFICE)
    client = np.where(
        rng.random(len(cust)) < 0.7,
        regular[cust, rng.integers(0, 10, len(cust))],
        places.clients[rng.integers(0, len(places.clients), len(cust))],
    )
    # Turnover over ~22 working days, in invoices of very different sizes.
    usd = (
        c.income_usd[cust]
        / (3.0 * np.sqrt(size[cust]) * 22)
        * np.exp(1.0 * rng.standard_normal(len(cust)) - 0.5)
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
