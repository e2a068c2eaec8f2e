"""Authorised push-payment (APP) scams: the customer is talked into paying a fraudster.

Nothing about any one payment is foreign to the customer: their own device, their own app,
office hours, a reference they typed themselves. What gives a scam away is its *story*: a
payee nobody at the bank knew, a first payment small enough to test the water, then larger
ones to the same payee within days, with the words the fraudster dictated ("trading account
deposit", "withdrawal fee", "visa fee", "safe account"); and, for the fraudster's mule
accounts that collect from several victims at once, the payee's many payers. Labels arrive
as fraud reports, when the victim realises (see engine._labels).
"""

from __future__ import annotations

from schemas import Typology
from stream.simulate import catalog as cat
from stream.simulate.scenario import Context, Party

VICTIM = cat.ROLE_VICTIM
# Where romance scammers ask the money to go; investment and impersonation scams use domestic
# mule accounts (and, for investments, crypto exchanges).
ROMANCE_DESTINATIONS = ("NG", "KE", "PH", "TR", "GB", "AE", "TH")
_MULES_KEPT = 12  # mule accounts reused by later scams of a run (several victims each)


def app_scam(ctx: Context) -> int:
    """Three to eight payments over days to weeks to one or two new payees: a small first one,
    then escalating, each with what the fraudster told the victim to write."""
    picked = ctx.pick(business=False)
    if len(picked) == 0:
        return 0
    victim, rng = int(picked[0]), ctx.rng
    kind = str(rng.choice(["investment", "romance", "impersonation"], p=[0.55, 0.25, 0.2]))
    scenario = ctx.scenario(f"fraud:app_scam:{kind}", Typology.APP_SCAM)
    payees = _payees(ctx, kind)
    memo_kind = {
        "investment": "SCAM INVESTMENT",
        "romance": "SCAM ROMANCE",
        "impersonation": "SCAM IMPERSONATION",
    }[kind]
    device = ctx.own_device(victim)  # authorised: the customer pays, from their own phone
    income = float(ctx.world.customers.income_usd[victim])
    usd = float(rng.uniform(40, 300))
    payments = int(rng.integers(3, 9)) if kind != "impersonation" else int(rng.integers(2, 5))
    span = float(rng.uniform(2, 25)) if kind != "impersonation" else float(rng.uniform(0.1, 2))
    day = float(ctx.start_day(span))
    for i in range(payments):
        payee = payees[0] if i == 0 or rng.random() < 0.75 else payees[-1]
        to_exchange = payee.cp in ctx.world.places.exchanges
        scenario.transfer(
            t=ctx.at(day, cat.HOURS_ONLINE),
            sender=Party(customer=victim),
            receiver=payee,
            usd=min(usd, 3.0 * income),
            channel=cat.CRYPTO if to_exchange else (cat.WIRE if usd > 5_000 else cat.P2P),
            sender_role=VICTIM,
            receiver_role=VICTIM,
            device=device,
            memo=cat.MEMO[memo_kind],
        )
        usd *= float(rng.uniform(1.4, 3.0))
        day += span / payments * float(rng.uniform(0.5, 1.5))
    return scenario.close()


def _payees(ctx: Context, kind: str) -> list[Party]:
    """One or two payees: fresh accounts, or mule accounts earlier scams of this run used
    (so a payee collects from several victims), or, for investments, a crypto exchange."""
    rng = ctx.rng
    count = 1 if rng.random() < 0.6 else 2
    if kind == "romance":
        return ctx.accounts(count, [str(rng.choice(ROMANCE_DESTINATIONS)) for _ in range(count)])
    if kind == "investment" and rng.random() < 0.3:
        exchanges = ctx.world.places.exchanges
        return [Party(account=int(exchanges[rng.integers(0, len(exchanges))]))]
    mules = ctx.world.scam_mules
    if mules and rng.random() < 0.5:
        return [Party(account=int(rng.choice(mules))) for _ in range(count)]
    fresh = ctx.accounts(count)
    mules.extend(p.account for p in fresh)
    del mules[:-_MULES_KEPT]
    return fresh
