"""Money-laundering typologies: structuring, mules, round-tripping, pass-through, dormant
accounts and high-risk jurisdictions.

Almost none of these is visible in a single event: a deposit of 9,400 is ordinary, a
transfer from a new counterparty is ordinary. The pattern is in the account's history (several
near-threshold deposits in a week, money out within hours of money in, an amount coming back
days after it left) or in the counterparty's (one account paid by many customers this week).
Labels arrive as confirmed cases, weeks later.
"""

from __future__ import annotations

import itertools

import numpy as np

from schemas import Typology
from schemas.reference import NEAR_THRESHOLD_LOW_FRACTION, REPORTING_THRESHOLD_USD
from stream.simulate import catalog as cat
from stream.simulate.scenario import Context, Party

SUBJECT = cat.ROLE_SUBJECT


def _memo(ctx: Context, *names: str) -> int:
    """One of the memos (or none): launderers write what honest customers write."""
    options = [-1, *(cat.MEMO[name] for name in names)]
    return int(options[int(ctx.rng.integers(0, len(options)))])


def _destinations(ctx: Context, count: int, offshore_share: float) -> list[Party]:
    countries = [
        str(ctx.rng.choice(cat.OFFSHORE_DESTINATIONS))
        if ctx.rng.random() < offshore_share
        else "US"
        for _ in range(count)
    ]
    return ctx.accounts(count, countries)


def _wire_or_ach(usd: float, party: Party, ctx: Context) -> int:
    abroad = not party.inside and ctx.world.counterparties.countries[party.cp] != cat.US
    return cat.WIRE if abroad or usd >= 10_000 else cat.ACH


def structuring(ctx: Context) -> int:
    """Cash deposits of 80-99.5% of the reporting threshold over days, at several branches,
    usually followed by one wire of most of the cash."""
    picked = ctx.pick(business=ctx.rng.random() < 0.2)
    if len(picked) == 0:
        return 0
    subject, rng = int(picked[0]), ctx.rng
    scenario = ctx.scenario("aml:structuring", Typology.STRUCTURING)
    span = float(rng.uniform(2, 10))
    day0 = ctx.start_day(span + 5)
    branches = [int(ctx.world.customers.branch[subject])]
    branches += [int(b) for b in rng.choice(ctx.world.places.branches, int(rng.integers(0, 3)))]
    total = 0.0
    times = sorted(
        ctx.at(day0 + float(d), cat.HOURS_OFFICE)
        for d in rng.uniform(0, span, int(rng.integers(3, 9)))
    )
    for t in times:
        fraction = rng.uniform(NEAR_THRESHOLD_LOW_FRACTION, 0.995)
        usd = float(np.floor(fraction * REPORTING_THRESHOLD_USD / 50) * 50)
        total += usd
        scenario.event(
            t=t,
            cust=subject,
            channel=cat.CASH,
            direction=cat.INBOUND,
            usd=usd,
            cp=branches[int(rng.integers(0, len(branches)))],
            memo=_memo(ctx, "DEPOSIT"),
            role=SUBJECT,
        )
    if rng.random() < 0.6:
        beneficiary = _destinations(ctx, 1, 0.4)[0]
        usd = total * float(rng.uniform(0.8, 1.0))
        scenario.transfer(
            t=ctx.days_later(times[-1], 1, 5, cat.HOURS_OFFICE),
            sender=Party(customer=subject),
            receiver=beneficiary,
            usd=usd,
            channel=_wire_or_ach(usd, beneficiary, ctx),
            sender_role=SUBJECT,
            receiver_role=SUBJECT,
            device=ctx.own_device(subject),
            memo=_memo(ctx, "INVOICE", "SERVICES"),
        )
    return scenario.close()


def mule_fan_in_out(ctx: Context) -> int:
    """Many unrelated senders pay one account within days; it forwards 85-98% of each batch
    within hours to a few beneficiaries (crypto exchange, abroad, domestic)."""
    picked = ctx.pick(business=False)
    if len(picked) == 0:
        return 0
    mule, rng, world = int(picked[0]), ctx.rng, ctx.world
    scenario = ctx.scenario("aml:mule_fan_in_out", Typology.MULE_FAN_IN_OUT)
    n_senders = int(rng.integers(6, 26))
    insiders = ctx.bystanders(int(rng.binomial(n_senders, 0.3)))
    insiders = insiders[insiders != mule]
    senders = [Party(customer=int(c)) for c in insiders]
    senders += ctx.accounts(n_senders - len(senders))
    rng.shuffle(senders)
    exchange = Party(account=int(rng.choice(world.places.exchanges)))
    outs = [exchange, *_destinations(ctx, int(rng.integers(1, 3)), 0.5)]
    device = ctx.own_device(mule) if rng.random() < 0.7 else ctx.fresh_device()
    span = float(rng.uniform(1, 4))
    day0 = ctx.start_day(span + 1)
    times = sorted(
        ctx.at(day0 + float(d), cat.HOURS_DAYTIME) for d in rng.uniform(0, span, n_senders)
    )
    balance, me = 0.0, Party(customer=mule)
    for i, (t, sender) in enumerate(zip(times, senders, strict=True)):
        usd = float(rng.uniform(150, 3_000))
        if rng.random() < 0.4:
            usd = round(usd, -1)
        balance += usd
        channel = int(rng.choice([cat.P2P, cat.P2P, cat.P2P, cat.ACH, cat.ACH, cat.WIRE]))
        scenario.transfer(
            t=t,
            sender=sender,
            receiver=me,
            usd=usd,
            channel=channel,
            sender_role=cat.ROLE_SENDER,
            receiver_role=SUBJECT,
            device=ctx.own_device(sender.customer) if sender.inside else (-1, -1),
            memo=_memo(ctx, "SERVICES", "INVOICE", "GIFT", "LOAN"),
        )
        last = i == n_senders - 1
        if last or rng.random() < 0.35:
            t_out = ctx.later(t, 30, 8 * 60)
            forward = balance * float(rng.uniform(0.85, 0.98))
            for share in rng.dirichlet(np.ones(int(rng.integers(1, 3)))):
                target = outs[int(rng.integers(0, len(outs)))]
                usd_out = forward * float(share)
                is_exchange = target is exchange
                scenario.transfer(
                    t=t_out,
                    sender=me,
                    receiver=target,
                    usd=usd_out,
                    channel=cat.CRYPTO if is_exchange else _wire_or_ach(usd_out, target, ctx),
                    sender_role=SUBJECT,
                    receiver_role=SUBJECT,
                    device=device,
                )
                t_out = ctx.later(t_out, 2, 30)
            balance = 0.0
    return scenario.close()


def round_tripping(ctx: Context) -> int:
    """Money leaves an account and comes back to it through 2-5 intermediaries (a cycle of 3-6
    accounts), minus small fees, over days; the return leg comes from a newly seen account."""
    rng = ctx.rng
    business = rng.random() < 0.6
    picked = ctx.pick(business=business)
    if len(picked) == 0:
        return 0
    origin = int(picked[0])
    scenario = ctx.scenario("aml:round_tripping", Typology.ROUND_TRIPPING)
    hops: list[Party] = []
    for _ in range(int(rng.integers(2, 6))):
        # intermediaries are mostly companies like the origin (shells, "trading partners")
        wanted = business if rng.random() < 0.8 else not business
        inside = ctx.pick(business=wanted) if rng.random() < 0.5 else np.empty(0, dtype=np.int64)
        if len(inside):
            hops.append(Party(customer=int(inside[0])))
        else:
            hops.extend(_destinations(ctx, 1, 0.6))
    low, high = (15_000, 200_000) if business else (4_000, 40_000)
    usd = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    t = ctx.at(ctx.start_day(3 * len(hops) + 2), cat.HOURS_OFFICE)
    path = [Party(customer=origin), *hops, Party(customer=origin)]
    for step, (sender, receiver) in enumerate(itertools.pairwise(path)):
        scenario.transfer(
            t=t,
            sender=sender,
            receiver=receiver,
            usd=usd,
            channel=_wire_or_ach(usd, receiver if not receiver.inside else sender, ctx),
            sender_role=cat.ROLE_ORIGIN if step == 0 else cat.ROLE_HOP,
            receiver_role=cat.ROLE_ORIGIN if step == len(path) - 2 else cat.ROLE_HOP,
            device=ctx.own_device(sender.customer) if sender.inside else (-1, -1),
            memo=_memo(ctx, "INVOICE", "SERVICES", "LOAN"),
        )
        usd *= float(rng.uniform(0.97, 0.995))  # fees and "commission" along the way
        t = ctx.days_later(t, 1, 4, cat.HOURS_OFFICE)
    return scenario.close()


def pass_through(ctx: Context) -> int:
    """Several rounds of: money in from outside, and within hours (nearly) all of it out
    again to other accounts; the account keeps nothing."""
    rng = ctx.rng
    business = rng.random() < 0.3
    picked = ctx.pick(business=business)
    if len(picked) == 0:
        return 0
    subject = int(picked[0])
    scenario = ctx.scenario("aml:pass_through", Typology.PASS_THROUGH)
    me = Party(customer=subject)
    device = ctx.own_device(subject) if rng.random() < 0.8 else ctx.fresh_device()
    sources = _destinations(ctx, int(rng.integers(1, 4)), 0.4)
    targets = _destinations(ctx, int(rng.integers(1, 4)), 0.4)
    span = float(rng.uniform(3, 10))
    day0 = ctx.start_day(span + 1)
    for d in sorted(rng.uniform(0, span, int(rng.integers(2, 6)))):
        t = ctx.at(day0 + float(d), cat.HOURS_OFFICE)
        usd = float(np.exp(rng.uniform(np.log(2_000), np.log(50_000)))) * (2 if business else 1)
        source = sources[int(rng.integers(0, len(sources)))]
        scenario.transfer(
            t=t,
            sender=source,
            receiver=me,
            usd=usd,
            channel=_wire_or_ach(usd, source, ctx),
            sender_role=SUBJECT,
            receiver_role=SUBJECT,
            memo=_memo(ctx, "INVOICE", "SERVICES", "LOAN"),
        )
        t = ctx.later(t, 20, 6 * 60)
        out_total = usd * float(rng.uniform(0.95, 1.0))
        for share in rng.dirichlet(np.ones(int(rng.integers(1, 4)))):
            target = targets[int(rng.integers(0, len(targets)))]
            scenario.transfer(
                t=t,
                sender=me,
                receiver=target,
                usd=out_total * float(share),
                channel=_wire_or_ach(out_total * float(share), target, ctx),
                sender_role=SUBJECT,
                receiver_role=SUBJECT,
                device=device,
                memo=_memo(ctx, "INVOICE", "SERVICES"),
            )
            t = ctx.later(t, 1, 40)
    return scenario.close()


def dormancy_window(ctx: Context) -> tuple[float, float] | None:
    """(silent from, wake-up day) for a dormant account, or None if the run is too short.

    The silence is at most ``dormancy_days`` and at most 60 % of the run, because context only
    knows what happened in the run: in a 30-day run, "months" of silence cannot be shown. Each
    account's silence is drawn between half that cap and the cap. A fixed 60 % put every
    wake-up in the last 40 % of the run - exactly the days a day split validates and tests
    on - so no model ever trained on the typology, while it made a quarter of the quality
    bank's test positives (BENCHMARKS.md, "Quality").
    """
    days = ctx.world.days
    cap = min(ctx.world.config.dormancy_days, int(days * 0.6))
    gap = float(ctx.rng.uniform(cap / 2, cap))
    quiet_from = float(ctx.rng.uniform(0.5, 2.0))
    earliest = max(ctx.first_day, int(np.ceil(quiet_from + gap)))
    if cap < 3 or earliest > days - 2:
        return None
    return quiet_from, float(ctx.rng.integers(earliest, days - 1))


def dormant_reactivation(ctx: Context) -> int:
    """A long-silent account wakes up to large sums from new counterparties, moved on within
    days (often abroad or to crypto); the owner's everyday spending never comes back."""
    window = dormancy_window(ctx)
    if window is None:
        return 0
    picked = ctx.pick(business=False)
    if len(picked) == 0:
        return 0
    subject, rng, (quiet_from, wake) = int(picked[0]), ctx.rng, window
    scenario = ctx.scenario("aml:dormant_reactivation", Typology.DORMANT_REACTIVATION)
    ctx.silence(subject, quiet_from, ctx.world.days, keep=scenario.index)
    me = Party(customer=subject)
    device = ctx.fresh_device() if rng.random() < 0.6 else ctx.own_device(subject)
    t = ctx.at(wake, cat.HOURS_OFFICE)
    received = 0.0
    for source in _destinations(ctx, int(rng.integers(1, 4)), 0.5):
        usd = float(np.exp(rng.uniform(np.log(3_000), np.log(60_000))))
        received += usd
        scenario.transfer(
            t=t,
            sender=source,
            receiver=me,
            usd=usd,
            channel=_wire_or_ach(usd, source, ctx),
            sender_role=SUBJECT,
            receiver_role=SUBJECT,
            memo=_memo(ctx, "INVOICE", "LOAN"),
        )
        t = ctx.days_later(t, 0, 1, cat.HOURS_OFFICE)
    exchange = Party(account=int(rng.choice(ctx.world.places.exchanges)))
    targets = [exchange, *_destinations(ctx, int(rng.integers(1, 3)), 0.7)]
    out_total = received * float(rng.uniform(0.9, 1.0))
    for share in rng.dirichlet(np.ones(int(rng.integers(1, 4)))):
        target = targets[int(rng.integers(0, len(targets)))]
        usd = out_total * float(share)
        t = ctx.days_later(t, 0, 1.5, cat.HOURS_OFFICE)
        scenario.transfer(
            t=t,
            sender=me,
            receiver=target,
            usd=usd,
            channel=cat.CRYPTO if target is exchange else _wire_or_ach(usd, target, ctx),
            sender_role=SUBJECT,
            receiver_role=SUBJECT,
            device=device,
        )
    return scenario.close()


def high_risk_jurisdiction(ctx: Context) -> int:
    """Wires to new beneficiaries in high-risk countries, above what the customer usually
    sends, one to four times over two weeks."""
    rng = ctx.rng
    business = rng.random() < 0.25
    picked = ctx.pick(business=business)
    if len(picked) == 0:
        return 0
    subject = int(picked[0])
    scenario = ctx.scenario("aml:high_risk_jurisdiction", Typology.HIGH_RISK_JURISDICTION)
    weights = cat.HIGH_RISK_WEIGHTS / cat.HIGH_RISK_WEIGHTS.sum()
    countries = [
        str(c) for c in rng.choice(cat.HIGH_RISK_DESTINATIONS, int(rng.integers(1, 3)), p=weights)
    ]
    beneficiaries = ctx.accounts(len(countries), countries)
    device = ctx.own_device(subject) if rng.random() < 0.7 else ctx.fresh_device()
    span = float(rng.uniform(0, 14))
    day0 = ctx.start_day(span)
    for d in sorted(rng.uniform(0, span, int(rng.integers(1, 5)))):
        scenario.transfer(
            t=ctx.at(day0 + float(d), cat.HOURS_OFFICE),
            sender=Party(customer=subject),
            receiver=beneficiaries[int(rng.integers(0, len(beneficiaries)))],
            # Log-uniform from 1,000: the low end overlaps the larger family remittances.
            usd=float(np.exp(rng.uniform(np.log(1_000), np.log(40_000)))) * (2 if business else 1),
            channel=cat.WIRE,
            sender_role=SUBJECT,
            receiver_role=SUBJECT,
            device=device,
            memo=_memo(ctx, "SERVICES", "FAMILY SUPPORT", "INVOICE"),
        )
    return scenario.close()
