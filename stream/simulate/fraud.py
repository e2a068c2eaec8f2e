"""Card-fraud typologies: card testing, account takeover, stolen cards, compromised terminals.

Each injector writes one scenario on a customer (the victim) who otherwise behaves normally, so
what gives the fraud away is the contrast with that customer's own history (docs/typologies.md),
not the events alone. Labels arrive as chargebacks.
"""

from __future__ import annotations

import numpy as np

from schemas import Typology
from schemas.reference import SMALL_AMOUNT_USD
from stream.simulate import catalog as cat
from stream.simulate.population import ONLINE, STORE
from stream.simulate.scenario import Context, Party, Scenario

ANY_HOUR = np.full(24, 1 / 24)  # bots and fraud rings keep no office hours
# Where account-takeover money goes: mostly domestic mule accounts, some abroad.
ATO_DESTINATIONS = ("US", "US", "US", "US", "US", "US", "US", "GB", "LT", "NG", "HK", "RO")


def card_testing(ctx: Context) -> int:
    """Many tiny card-not-present authorisations at different merchants within minutes, then
    one to three large ones at risky merchants once the number is known to work."""
    picked = ctx.pick(business=False)
    if len(picked) == 0:
        return 0
    victim, rng = int(picked[0]), ctx.rng
    scenario = ctx.scenario("fraud:card_testing", Typology.CARD_TESTING)
    # The bank sees the fraudster's device only on some merchants' checkouts.
    device = ctx.fresh_device() if rng.random() < 0.5 else (-1, -1)
    t = ctx.at(ctx.start_day(1), ANY_HOUR)
    for merchant in ctx.merchants(int(rng.integers(5, 26)), ONLINE):  # a different shop each
        usd = 1.0 if rng.random() < 0.3 else round(float(rng.uniform(0.5, SMALL_AMOUNT_USD)), 2)
        ctx.card_event(
            scenario,
            t=t,
            cust=victim,
            merchant=int(merchant),
            usd=usd,
            role=cat.ROLE_VICTIM,
            device=device,
        )
        t = t + int(rng.integers(10_000, 120_000))
    t = ctx.later(t, 5, 60)
    for _ in range(int(rng.integers(1, 4))):
        ctx.card_event(
            scenario,
            t=t,
            cust=victim,
            merchant=ctx.merchant(ONLINE, mccs=cat.RISKY_MCC_CODES),
            usd=float(rng.uniform(300, 2_500)),
            role=cat.ROLE_VICTIM,
            device=device,
        )
        t = ctx.later(t, 1, 20)
    return scenario.close()


def account_takeover(ctx: Context) -> int:
    """A fraudster logs in from a new device and drains the account to new beneficiaries,
    sometimes after a small test transfer; the drained sum is about a month of income."""
    picked = ctx.pick(business=False)
    if len(picked) == 0:
        return 0
    victim, rng = int(picked[0]), ctx.rng
    scenario = ctx.scenario("fraud:account_takeover", Typology.ACCOUNT_TAKEOVER)
    device = ctx.fresh_device()
    countries = [str(rng.choice(ATO_DESTINATIONS)) for _ in range(int(rng.integers(1, 4)))]
    beneficiaries = ctx.accounts(len(countries), countries)
    t = ctx.at(ctx.start_day(1), cat.HOURS_ONLINE)
    me = Party(customer=victim)
    if rng.random() < 0.5:
        scenario.transfer(
            t=t,
            sender=me,
            receiver=beneficiaries[0],
            usd=float(rng.integers(1, 50)),
            channel=cat.P2P,
            sender_role=cat.ROLE_VICTIM,
            receiver_role=cat.ROLE_VICTIM,
            device=device,
        )
        t = ctx.later(t, 5, 90)
    total = float(ctx.world.customers.income_usd[victim] * rng.uniform(0.6, 1.4))
    parts = rng.dirichlet(np.ones(int(rng.integers(1, 5))))
    for share in parts:
        beneficiary = beneficiaries[int(rng.integers(0, len(beneficiaries)))]
        abroad = ctx.world.counterparties.countries[beneficiary.cp] != cat.US
        usd = total * float(share)
        scenario.transfer(
            t=t,
            sender=me,
            receiver=beneficiary,
            usd=usd,
            channel=cat.WIRE if abroad or usd > 5_000 else (cat.P2P if usd < 2_500 else cat.ACH),
            sender_role=cat.ROLE_VICTIM,
            receiver_role=cat.ROLE_VICTIM,
            device=device,
            memo=int(rng.choice([-1, -1, cat.MEMO["SERVICES"], cat.MEMO["LOAN"]])),
        )
        t = ctx.later(t, 10, 120)
    return scenario.close()


def stolen_card(ctx: Context) -> int:
    """A burst of purchases at risky merchant categories: card-not-present with stolen
    details (three times in four), or in shops with the physical card."""
    picked = ctx.pick(business=False)
    if len(picked) == 0:
        return 0
    victim, rng = int(picked[0]), ctx.rng
    scenario = ctx.scenario("fraud:stolen_card", Typology.STOLEN_CARD)
    online = rng.random() < 0.75
    device = ctx.fresh_device() if online and rng.random() < 0.5 else (-1, -1)
    abroad = not online and rng.random() < 0.3
    country = int(rng.choice([cat.COUNTRY_INDEX[c] for c in ("MX", "GB", "ES", "CA")]))
    t = ctx.at(ctx.start_day(1), cat.HOURS_ONLINE if online else cat.HOURS_SHOPPING)
    for _ in range(int(rng.integers(3, 11 if online else 9))):
        merchant = ctx.merchant(
            ONLINE if online else STORE,
            mccs=cat.RISKY_MCC_CODES,
            country=(country if abroad else cat.US) if not online else None,
        )
        median = float(cat.MCC_MEDIAN_USD[ctx.world.merchants.mcc[merchant]])
        ctx.card_event(
            scenario,
            t=t,
            cust=victim,
            merchant=merchant,
            usd=float(np.clip(median * rng.uniform(1.5, 6.0), 80, 2_500)),
            role=cat.ROLE_VICTIM,
            device=device,
        )
        t = ctx.later(t, 3, 40 if online else 60)
    return scenario.close()


def compromised_terminal(ctx: Context) -> int:
    """A skimmer on one terminal of a busy local store for two to five weeks.

    The cards that pay there meanwhile are copied (their own payments are genuine: kept in a
    separate, legitimate scenario). The tampered terminal also charges some of them twice -
    frauds at the point itself: a second payment of about the same amount minutes after the
    genuine one, nothing unusual for the card - and the fraudsters later use about half of the
    copied cards elsewhere, days to weeks after the skim (``_cash_out``). The cardholders'
    chargebacks arrive with the usual, varying delays (see ``_labels``), so the terminal's
    confirmed frauds accumulate while it is still compromised: that history gives the point's
    later frauds away, and a card's payment at a point since confirmed compromised makes its
    cash-out stand out from an ordinary splurge.
    """
    rng, m = ctx.rng, ctx.world.merchants
    stores = ctx.world.customers.stores
    regulars = np.bincount(stores.ravel(), minlength=len(m.kind))
    candidates = np.flatnonzero((m.kind == STORE) & (m.country == cat.US) & (regulars >= 3))
    if len(candidates) == 0:
        return 0
    weights = regulars[candidates].astype(np.float64)
    merchant = int(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
    terminal = int(m.first_terminal[merchant] + rng.integers(0, m.n_terminals[merchant]))
    period = float(rng.uniform(14, 35))
    day0 = ctx.start_day(period)
    wanted = int(rng.integers(12, 41))
    # Its regular customers first, then passers-by (anyone local).
    cards = ctx.bystanders(wanted, among=np.flatnonzero((stores == merchant).any(axis=1)))
    if len(cards) < wanted:
        others = np.setdiff1d(ctx.bystanders(wanted * 2), cards)[: wanted - len(cards)]
        cards = np.r_[cards, others]
    fraud = ctx.scenario("fraud:compromised_terminal", Typology.COMPROMISED_TERMINAL)
    skims = ctx.scenario("skim:compromised_terminal")  # the genuine payments, legitimate
    country = int(m.country[merchant])
    at_point = {
        "channel": cat.CARD,
        "direction": cat.OUTBOUND,
        "currency": int(cat.COUNTRY_CURRENCY[country]),
        "cp": int(m.cp[merchant]),
        "country": country,
        "terminal": terminal,
        "mcc": int(m.mcc[merchant]),
    }
    for card in (int(c) for c in cards):
        usd = ctx.typical_usd(card, merchant) * float(rng.uniform(0.6, 1.4))
        t = ctx.at(day0 + float(rng.uniform(0, period)), cat.HOURS_SHOPPING)
        skims.event(t=t, cust=card, usd=usd, role=cat.ROLE_CUSTOMER, **at_point)
        if rng.random() < 0.4:
            fraud.event(
                t=ctx.later(t, 1, 15), cust=card, usd=usd * float(rng.uniform(0.9, 1.3)),
                role=cat.ROLE_VICTIM, **at_point,
            )  # fmt: skip
        if rng.random() < 0.5:
            _cash_out(ctx, fraud, card, ctx.days_later(t, 3, 21, cat.HOURS_SHOPPING), merchant)
    skims.close()
    return fraud.close()


def _cash_out(ctx: Context, scenario: Scenario, card: int, t: int, avoid: int) -> None:
    """What fraudsters do with a copied card: a cloned card emptied at ATMs the cardholder
    never uses - two to four withdrawals near the daily limit within the hour, at any hour -
    or spent on resellable goods (electronics, jewellery, gift cards) in other shops than the
    skimmed one (``avoid``)."""
    rng, world = ctx.rng, ctx.world
    if rng.random() < 0.5:
        atms = world.places.atms
        own = set(world.customers.atms[card].tolist())
        atm = int(atms[rng.integers(0, len(atms))])
        while atm in own and len(atms) > 2:
            atm = int(atms[rng.integers(0, len(atms))])
        t = ctx.at((t - world.start_ms) / 86_400_000, ANY_HOUR)
        for _ in range(int(rng.integers(2, 5))):
            scenario.event(
                t=t, cust=card, channel=cat.ATM_CH, direction=cat.OUTBOUND,
                usd=20.0 * int(rng.integers(10, 26)), cp=atm, country=cat.US, role=cat.ROLE_VICTIM,
            )  # fmt: skip
            t = ctx.later(t, 2, 25)
        return
    for _ in range(int(rng.integers(1, 4))):
        merchant = ctx.merchant(STORE, mccs=cat.RISKY_MCC_CODES, country=cat.US)
        if merchant == avoid:
            continue
        median = float(cat.MCC_MEDIAN_USD[world.merchants.mcc[merchant]])
        ctx.card_event(
            scenario, t=t, cust=card, merchant=merchant,
            usd=float(np.clip(median * rng.uniform(1.0, 4.0), 40, 2_000)), role=cat.ROLE_VICTIM,
        )  # fmt: skip
        t = ctx.later(t, 5, 120)
