"""Benign look-alikes of the money-movement typologies: laundering and APP scams.

The card-side look-alikes and the table of which story mimics which typology are in
:mod:`stream.simulate.lookalikes` (its docstring says why look-alikes exist). All events here
are legitimate.
"""

from __future__ import annotations

import numpy as np

from schemas.reference import REPORTING_THRESHOLD_USD
from stream.simulate import catalog as cat
from stream.simulate.catalog import ROLE_CUSTOMER as ME
from stream.simulate.laundering import dormancy_window
from stream.simulate.scenario import Context, Party


def cash_business_deposits(ctx: Context) -> int:
    """A shop banks a week of cash takings: several deposits near the threshold, at its usual
    branch, some of them above it (which structurers avoid)."""
    cust = ctx.pick_one(business=True)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:cash_business_deposits")
    day0 = ctx.start_day(7)
    for d in sorted(rng.uniform(0, 7, int(rng.integers(2, 6)))):
        scenario.event(
            t=ctx.at(day0 + float(d), cat.HOURS_OFFICE),
            cust=cust,
            channel=cat.CASH,
            direction=cat.INBOUND,
            usd=float(np.rint(rng.uniform(0.6, 1.3) * REPORTING_THRESHOLD_USD / 10) * 10),
            cp=int(ctx.world.customers.branch[cust]),
            memo=cat.MEMO["DEPOSIT"],
            role=ME,
        )
    return scenario.close()


def cash_windfall(ctx: Context) -> int:
    """A private customer pays in the cash from selling a car or a family gift: one or two
    deposits near or above the threshold within days (structuring's retail look-alike)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:cash_windfall")
    day0 = ctx.start_day(4)
    branch = int(ctx.world.customers.branch[cust])
    for d in sorted(rng.uniform(0, 4, int(rng.integers(1, 3)))):
        scenario.event(
            t=ctx.at(day0 + float(d), cat.HOURS_OFFICE),
            cust=cust,
            channel=cat.CASH,
            direction=cat.INBOUND,
            usd=float(np.rint(rng.uniform(0.7, 1.25) * REPORTING_THRESHOLD_USD / 50) * 50),
            cp=branch if rng.random() < 0.8 else int(rng.choice(ctx.world.places.branches)),
            memo=int(rng.choice([cat.MEMO["DEPOSIT"], -1])),
            role=ME,
        )
    return scenario.close()


def under_round_invoices(ctx: Context) -> int:
    """A week of invoices priced just under a round number (9,950, 8,990), paid to suppliers."""
    cust = ctx.pick_one(business=ctx.rng.random() < 0.7)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:under_round_invoices")
    suppliers = [int(s) for s in ctx.world.customers.suppliers[cust] if s >= 0]
    suppliers = suppliers or [int(ctx.accounts(1)[0].cp)]
    device = ctx.own_device(cust)
    day0 = ctx.start_day(7)
    for d in sorted(rng.uniform(0, 7, int(rng.integers(2, 5)))):
        usd = float(rng.choice([9_000, 10_000]) - rng.choice([5, 10, 50, 1_010]))
        scenario.transfer(
            t=ctx.at(day0 + float(d), cat.HOURS_OFFICE),
            sender=Party(customer=cust),
            receiver=Party(account=suppliers[int(rng.integers(0, len(suppliers)))]),
            usd=usd,
            channel=cat.ACH,
            sender_role=ME,
            receiver_role=ME,
            device=device,
            memo=cat.MEMO["INVOICE"],
        )
    return scenario.close()


def marketplace_seller(ctx: Context) -> int:
    """Someone selling things online: many small P2P payments from different buyers, then part
    of the money to a supplier or savings a day or more later (the mule's look-alike)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:marketplace_seller")
    n_buyers = int(rng.integers(8, 31))
    insiders = ctx.bystanders(int(rng.binomial(n_buyers, 0.3)))
    buyers = [Party(customer=int(c)) for c in insiders if c != cust]
    buyers += ctx.accounts(n_buyers - len(buyers))
    span = float(rng.uniform(2, 6))
    day0 = ctx.start_day(span + 3)
    me, received = Party(customer=cust), 0.0
    for d, buyer in zip(sorted(rng.uniform(0, span, len(buyers))), buyers, strict=True):
        usd = float(np.rint(rng.uniform(20, 400)))
        received += usd
        scenario.transfer(
            t=ctx.at(day0 + float(d), cat.HOURS_DAYTIME),
            sender=buyer,
            receiver=me,
            usd=usd,
            channel=cat.P2P,
            sender_role=ME,
            receiver_role=ME,
            device=ctx.own_device(buyer.customer) if buyer.inside else (-1, -1),
            memo=int(rng.choice([-1, -1, cat.MEMO["THANKS"], cat.MEMO["INVOICE"]])),
        )
    for target in ctx.accounts(int(rng.integers(1, 3))):
        scenario.transfer(
            t=ctx.at(day0 + span + float(rng.uniform(1, 3)), cat.HOURS_DAYTIME),
            sender=me,
            receiver=target,
            usd=received * float(rng.uniform(0.2, 0.45)),
            channel=cat.ACH,
            sender_role=ME,
            receiver_role=ME,
            device=ctx.own_device(cust),
            memo=int(rng.choice([cat.MEMO["SAVINGS"], cat.MEMO["INVOICE"]])),
        )
    return scenario.close()


def friend_repayment(ctx: Context) -> int:
    """A loan between friends paid back days later: money returns to where it came from, but
    from the same account it went to (round-tripping's look-alike)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    friends = [int(f) for f in ctx.world.customers.friends[cust] if f != cust]
    friends = [f for f in friends if not ctx.world.silent[f]]
    friend = Party(customer=friends[0]) if friends and rng.random() < 0.7 else ctx.accounts(1)[0]
    scenario = ctx.scenario("lookalike:friend_repayment")
    usd = float(np.rint(rng.uniform(200, 5_000) / 10) * 10)
    t = ctx.at(ctx.start_day(14), cat.HOURS_DAYTIME)
    me = Party(customer=cust)
    for sender, receiver, amount in (
        (me, friend, usd),
        (friend, me, usd * rng.choice([1, 1, 1.01])),
    ):
        scenario.transfer(
            t=t,
            sender=sender,
            receiver=receiver,
            usd=float(amount),
            channel=cat.P2P if usd < 2_500 else cat.ACH,
            sender_role=ME,
            receiver_role=ME,
            device=ctx.own_device(sender.customer) if sender.inside else (-1, -1),
            memo=cat.MEMO["LOAN"],
        )
        t = ctx.days_later(t, 2, 14, cat.HOURS_DAYTIME)
    return scenario.close()


def income_paid_on(ctx: Context) -> int:
    """A large payment in (a house sale, a bonus) passed on within hours to savings or an
    escrow account (pass-through's look-alike)."""
    cust = ctx.pick_one(business=ctx.rng.random() < 0.3)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:income_paid_on")
    me = Party(customer=cust)
    usd = float(rng.uniform(2_000, 40_000))
    t = ctx.at(ctx.start_day(1), cat.HOURS_OFFICE)
    source = ctx.accounts(1)[0]
    scenario.transfer(
        t=t,
        sender=source,
        receiver=me,
        usd=usd,
        channel=cat.WIRE if usd >= 10_000 else cat.ACH,
        sender_role=ME,
        receiver_role=ME,
        memo=int(rng.choice([-1, cat.MEMO["SALARY"], cat.MEMO["DEPOSIT"]])),
    )
    onward = usd * float(rng.uniform(0.9, 1.0))
    device = ctx.own_device(cust)
    for share, target in zip(rng.dirichlet(np.ones(2)), ctx.accounts(2), strict=True):
        t = ctx.later(t, 60, 8 * 60)
        scenario.transfer(
            t=t,
            sender=me,
            receiver=target,
            usd=onward * float(share),
            channel=cat.WIRE if onward * share >= 10_000 else cat.ACH,
            sender_role=ME,
            receiver_role=ME,
            device=device,
            memo=int(rng.choice([cat.MEMO["SAVINGS"], cat.MEMO["DEPOSIT"]])),
        )
    return scenario.close()


def back_from_abroad(ctx: Context) -> int:
    """A customer silent for a long stay abroad comes back: everyday spending resumes, money
    arrives from an account abroad, perhaps from a new phone (dormancy's look-alike)."""
    window = dormancy_window(ctx)
    cust = ctx.pick_one(business=False) if window is not None else None
    if cust is None or window is None:
        return 0
    rng, (quiet_from, wake) = ctx.rng, window
    scenario = ctx.scenario("lookalike:back_from_abroad")
    ctx.silence(cust, quiet_from, wake, keep=scenario.index)
    country = str(rng.choice(["GB", "DE", "MX", "FR", "ES", "JP"]))
    device = ctx.fresh_device() if rng.random() < 0.5 else ctx.own_device(cust)
    usd = float(rng.uniform(2_000, 20_000))
    t = ctx.at(wake, cat.HOURS_OFFICE)
    scenario.transfer(
        t=t,
        sender=ctx.accounts(1, country)[0],
        receiver=Party(customer=cust),
        usd=usd,
        channel=cat.WIRE,
        sender_role=ME,
        receiver_role=ME,
        memo=cat.MEMO["SAVINGS"],
    )
    if rng.random() < 0.5:
        scenario.transfer(
            t=ctx.days_later(t, 0, 2, cat.HOURS_OFFICE),
            sender=Party(customer=cust),
            receiver=ctx.accounts(1)[0],
            usd=usd * float(rng.uniform(0.2, 0.8)),
            channel=cat.ACH,
            sender_role=ME,
            receiver_role=ME,
            device=device,
            memo=cat.MEMO["DEPOSIT"],
        )
    return scenario.close()


def family_remittance(ctx: Context) -> int:
    """Money home to family every month, same beneficiary, often in a high-risk country
    (the high-risk-jurisdiction typology's look-alike)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:family_remittance")
    beneficiary = ctx.accounts(1, str(rng.choice(cat.REMITTANCE_DESTINATIONS)))[0]
    device = ctx.own_device(cust)
    # Mostly a few hundred; some families get thousands (school fees, building a house).
    usd = float(np.exp(rng.uniform(np.log(150), np.log(5_000))))
    day = float(rng.integers(0, min(30, ctx.world.days)))
    while day < ctx.world.days:
        scenario.transfer(
            t=ctx.at(day, cat.HOURS_DAYTIME),
            sender=Party(customer=cust),
            receiver=beneficiary,
            usd=usd * float(rng.uniform(0.9, 1.1)),
            channel=cat.WIRE,
            sender_role=ME,
            receiver_role=ME,
            device=device,
            memo=int(rng.choice([cat.MEMO["FAMILY SUPPORT"], -1])),
        )
        day += float(rng.integers(28, 33))
    return scenario.close()


def rent_split(ctx: Context) -> int:
    """Flatmates send their share of the rent, then the whole rent goes to the landlord within a
    day: many in, then one out (the mule's look-alike, sharing its order)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng = ctx.rng
    scenario = ctx.scenario("lookalike:rent_split")
    c = ctx.world.customers
    landlord = int(c.housing_cp[cust]) if c.housing_cp[cust] >= 0 else ctx.accounts(1)[0].cp
    flatmates = [Party(customer=int(f)) for f in c.friends[cust, : int(rng.integers(1, 3))]]
    flatmates = [p for p in flatmates if p.customer != cust] + ctx.accounts(int(rng.integers(0, 2)))
    share = float(rng.uniform(400, 1_200))
    device = ctx.own_device(cust)
    day = float(ctx.start_day(35))
    for _ in range(2 if ctx.world.days - day > 32 else 1):
        t = ctx.at(day, cat.HOURS_DAYTIME)
        for flatmate in flatmates:
            scenario.transfer(
                t=t, sender=flatmate, receiver=Party(customer=cust), usd=share, channel=cat.P2P,
                sender_role=ME, receiver_role=ME, memo=cat.MEMO["RENT SHARE"],
            )  # fmt: skip
            t = ctx.later(t, 10, 600)
        scenario.transfer(
            t=ctx.later(t, 60, 1_200), sender=Party(customer=cust),
            receiver=Party(account=int(landlord)), usd=share * (len(flatmates) + 1),
            channel=cat.ACH, sender_role=ME, receiver_role=ME, device=device,
            memo=cat.MEMO["RENT"],
        )  # fmt: skip
        day += 30
    return scenario.close()


def investment_funding(ctx: Context) -> int:
    """A customer opens a brokerage account: a new payee, a first deposit, a larger one days
    later, then monthly contributions, with investment words (the APP scam's look-alike,
    sharing its vocabulary and its order; the brokerage is paid by many customers for years)."""
    cust = ctx.pick_one(business=False)
    if cust is None:
        return 0
    rng, world = ctx.rng, ctx.world
    if not world.brokerages:
        world.brokerages.extend(p.cp for p in ctx.accounts(4))
    brokerage = Party(account=int(rng.choice(world.brokerages)))
    scenario = ctx.scenario("lookalike:investment_funding")
    device = ctx.own_device(cust)
    income = float(world.customers.income_usd[cust])
    day = float(ctx.start_day(20))
    amounts = [income * float(rng.uniform(0.1, 0.4)), income * float(rng.uniform(0.5, 1.5))]
    while day < world.days:
        usd = amounts.pop(0) if amounts else income * float(rng.uniform(0.05, 0.15))
        scenario.transfer(
            t=ctx.at(day, cat.HOURS_ONLINE), sender=Party(customer=cust), receiver=brokerage,
            usd=float(np.rint(usd / 50) * 50), channel=cat.ACH, sender_role=ME, receiver_role=ME,
            device=device, memo=cat.MEMO["INVESTMENT"],
        )  # fmt: skip
        day += float(rng.uniform(2, 6)) if amounts else float(rng.integers(28, 33))
    return scenario.close()
