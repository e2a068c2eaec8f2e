"""Tools for writing scenarios: a few related events told one at a time.

Typologies and look-alikes are stories ("a mule receives from many, then forwards within
hours"), so they are written event by event in plain Python; they are rare enough (under 2% of
events) that this costs nothing next to the vectorised background.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from schemas import Typology
from stream.simulate import catalog as cat
from stream.simulate.frame import Column, FrameBuilder
from stream.simulate.population import DAY_MS, HOUR_MS, ONLINE, STORE, World

MINUTE_MS = 60_000
_MINOR_PER_USD: list[float] = cat.MINOR_PER_USD.tolist()


@dataclass(frozen=True)
class Party:
    """One side of a transfer: a customer of the bank (``customer``) or an outside account."""

    customer: int = -1
    account: int = -1  # counterparty index, for outside accounts

    @property
    def cp(self) -> int:
        # A customer's own account is the counterparty with the customer's number.
        return self.customer if self.customer >= 0 else self.account

    @property
    def inside(self) -> bool:
        return self.customer >= 0


class Scenario:
    """Collects the events of one scenario and hands them to the frame in one block."""

    def __init__(self, ctx: Context, kind: str, typology: Typology) -> None:
        self.ctx = ctx
        self.index = ctx.world.add_scenario(kind)
        self.typology = cat.code(cat.TYPOLOGIES, typology)
        self.rows: dict[str, list[int]] = defaultdict(list)

    def event(
        self,
        *,
        t: int,
        cust: int,
        channel: int,
        direction: int,
        usd: float,
        cp: int,
        role: int,
        currency: int = cat.USD,
        country: int | None = None,
        terminal: int = -1,
        mcc: int = -1,
        device: int = -1,
        ip: int = -1,
        memo: int = -1,
        link: int = -1,
    ) -> None:
        rows = self.rows
        rows["t_ms"].append(int(t))
        rows["cust"].append(int(cust))
        rows["channel"].append(channel)
        rows["direction"].append(direction)
        # as catalog.to_minor, for one amount (numpy per scalar is needlessly slow here)
        rows["amount"].append(max(1, round(usd * _MINOR_PER_USD[currency])))
        rows["currency"].append(currency)
        rows["cp"].append(int(cp))
        rows["country"].append(
            int(self.ctx.world.counterparties.countries[cp]) if country is None else country
        )
        rows["terminal"].append(int(terminal))
        rows["mcc"].append(int(mcc))
        rows["device"].append(int(device))
        rows["ip"].append(int(ip))
        rows["memo"].append(memo)
        rows["role"].append(role)
        rows["link"].append(link)

    def transfer(
        self,
        *,
        t: int,
        sender: Party,
        receiver: Party,
        usd: float,
        channel: int,
        sender_role: int,
        receiver_role: int,
        device: tuple[int, int] = (-1, -1),
        memo: int = -1,
        country: int | None = None,
    ) -> None:
        """A payment; each side that banks here gets its own event (outbound, then inbound).

        ``country`` is where the outside party's bank is, when it is not the account's own.
        """
        link = -1
        if sender.inside and receiver.inside:
            link = int(self.ctx.out.new_links(1)[0])
        usd = round(usd, 2)
        if sender.inside:
            self.event(
                t=t,
                cust=sender.customer,
                channel=channel,
                direction=cat.OUTBOUND,
                usd=usd,
                cp=receiver.cp,
                country=country if not receiver.inside else None,
                device=device[0],
                ip=device[1],
                memo=memo,
                role=sender_role,
                link=link,
            )
        if receiver.inside:
            self.event(
                t=t + int(self.ctx.rng.integers(1_000, 120_000)),
                cust=receiver.customer,
                channel=channel,
                direction=cat.INBOUND,
                usd=usd,
                cp=sender.cp,
                country=country if not sender.inside else None,
                memo=memo,
                role=receiver_role,
                link=link,
            )

    def close(self) -> int:
        """Add the events to the frame (those past the end of the run are dropped)."""
        if not self.rows:
            return 0
        t = np.array(self.rows["t_ms"], dtype=np.int64)
        keep = t < self.ctx.world.end_ms
        columns = {
            name: np.array(values, dtype=np.int64)[keep] for name, values in self.rows.items()
        }
        return self.ctx.out.add(**columns, typology=self.typology, scenario=self.index)


@dataclass
class Context:
    """What an injector needs: the world, the frame, its own random stream, its first day."""

    world: World
    out: FrameBuilder
    rng: np.random.Generator
    first_day: int
    _pools: dict[tuple[object, ...], tuple[Column, np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    _cdfs: dict[bytes, np.ndarray] = field(default_factory=dict, repr=False)  # hour profiles

    def scenario(self, kind: str, typology: Typology = Typology.LEGITIMATE) -> Scenario:
        return Scenario(self, kind, typology)

    # -- who -----------------------------------------------------------------------------------
    def pick(
        self, count: int = 1, *, business: bool | None = None, home_only: bool = True
    ) -> Column:
        """Customers not yet in any scenario (and never silenced); they become busy.

        Returns fewer than ``count`` (possibly none) when the population is used up.
        """
        world = self.world
        ok = ~world.busy & ~world.silent
        if business is not None:
            ok &= (world.customers.segment == 1) == business
        if home_only:
            ok &= world.customers.home == cat.US
        candidates = np.flatnonzero(ok)
        chosen = self.rng.choice(candidates, size=min(count, len(candidates)), replace=False)
        world.busy[chosen] = True
        return chosen.astype(np.int64)

    def pick_one(self, *, business: bool | None) -> int | None:
        """One customer, as :meth:`pick`; None when the population is used up."""
        picked = self.pick(business=business)
        return int(picked[0]) if len(picked) else None

    def bystanders(self, count: int, among: Column | None = None) -> Column:
        """Customers who only pass by (a terminal's customers): busy ones allowed."""
        pool = np.flatnonzero(~self.world.silent & (self.world.customers.home == cat.US))
        if among is not None:
            pool = np.intersect1d(pool, among)
        return self.rng.choice(pool, size=min(count, len(pool)), replace=False).astype(np.int64)

    # -- when ----------------------------------------------------------------------------------
    def start_day(self, span_days: float) -> int:
        """A day on which a scenario lasting ``span_days`` can start and (if possible) end."""
        last = max(self.first_day, self.world.days - int(np.ceil(span_days)) - 1)
        return int(self.rng.integers(self.first_day, last + 1))

    def at(self, day: float, hours: np.ndarray | None = None) -> int:
        """A time on ``day`` (fractional days allowed), hour drawn from a profile if given."""
        base = self.world.start_ms + int(day * DAY_MS)
        if hours is None:
            return base
        # Inverse CDF by hand: Generator.choice(p=...) validates p on every call, which made
        # it the slowest line of scenario writing.
        key = hours.tobytes()
        cdf = self._cdfs.get(key)
        if cdf is None:
            cdf = self._cdfs[key] = np.cumsum(hours)
        hour = min(23, int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")))
        return base - base % DAY_MS + hour * HOUR_MS + int(self.rng.integers(0, HOUR_MS))

    def later(self, t: int, low_minutes: float, high_minutes: float) -> int:
        return t + int(self.rng.uniform(low_minutes, high_minutes) * MINUTE_MS)

    def days_later(self, t: int, low_days: float, high_days: float, hours: np.ndarray) -> int:
        """A time some days after ``t``, at an hour drawn from ``hours`` (and after ``t``).

        Long gaps must land at plausible hours: adding a random number of minutes would put
        days-later transfers at 3 a.m. as often as at noon, a tell no honest customer has.
        """
        day = (t - self.world.start_ms) // DAY_MS + float(self.rng.uniform(low_days, high_days))
        return max(self.at(day, hours), t + MINUTE_MS)

    # -- how -----------------------------------------------------------------------------------
    def fresh_device(self) -> tuple[int, int]:
        """A device and network the bank has never seen (a fraudster's, or a new phone)."""
        return self.world.new_device(), self.world.new_ip()

    def own_device(self, cust: int) -> tuple[int, int]:
        devices, ips = self.world.customers.devices[cust], self.world.customers.ips[cust]
        slot = 1 if devices[1] >= 0 and self.rng.random() < 0.3 else 0
        return int(devices[slot]), int(ips[slot])

    def accounts(self, count: int, countries: list[str] | str = cat.HOME) -> list[Party]:
        """New outside accounts, in the given country or drawn from a list of countries."""
        codes = [countries] * count if isinstance(countries, str) else countries
        cps = self.world.new_accounts(count, [cat.COUNTRY_INDEX[c] for c in codes])
        return [Party(account=int(cp)) for cp in cps]

    def merchant(
        self, kind: int = ONLINE, *, mccs: Column | None = None, country: int | None = None
    ) -> int:
        """A merchant (index) by popularity, optionally restricted to categories or a country."""
        return int(self.merchants(1, kind, mccs=mccs, country=country)[0])

    def merchants(
        self,
        count: int,
        kind: int = ONLINE,
        *,
        mccs: Column | None = None,
        country: int | None = None,
    ) -> Column:
        """``count`` different merchants by popularity (repeats only if too few exist)."""
        key = (kind, None if mccs is None else tuple(mccs.tolist()), country)
        if key not in self._pools:
            m = self.world.merchants
            ok = m.kind == kind
            if mccs is not None:
                ok &= np.isin(m.mcc, mccs)
            if country is not None:
                ok &= m.country == country
            members = np.flatnonzero(ok)
            if len(members) == 0:  # tiny populations: fall back to any merchant of the kind
                members = np.flatnonzero(m.kind == kind)
            weights = m.popularity[members]
            self._pools[key] = (members.astype(np.int64), weights / weights.sum())
        members, probabilities = self._pools[key]
        if count == 1:  # the common case, without choice()'s validation of p on every call
            cdf = np.cumsum(probabilities)
            index = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
            return members[[min(index, len(members) - 1)]]
        chosen = self.rng.choice(len(members), count, replace=count > len(members), p=probabilities)
        return members[chosen]

    def card_event(
        self,
        scenario: Scenario,
        *,
        t: int,
        cust: int,
        merchant: int,
        usd: float,
        role: int,
        device: tuple[int, int] = (-1, -1),
    ) -> None:
        """A card payment at a merchant: at one of its terminals when it is a store."""
        m = self.world.merchants
        store = int(m.kind[merchant]) == STORE
        country = int(m.country[merchant])
        terminal = -1
        if store:
            terminal = int(
                m.first_terminal[merchant] + self.rng.integers(0, m.n_terminals[merchant])
            )
        scenario.event(
            t=t,
            cust=cust,
            channel=cat.CARD if store else cat.ECOM,
            direction=cat.OUTBOUND,
            usd=max(usd, 0.5),
            currency=int(cat.COUNTRY_CURRENCY[country]),
            cp=int(m.cp[merchant]),
            country=country,
            terminal=terminal,
            mcc=int(m.mcc[merchant]),
            device=device[0] if not store else -1,
            ip=device[1] if not store else -1,
            role=role,
        )

    def typical_usd(self, cust: int, merchant: int) -> float:
        """What this customer usually spends at this kind of merchant."""
        mcc = int(self.world.merchants.mcc[merchant])
        return float(cat.MCC_MEDIAN_USD[mcc] * self.world.customers.spend_scale[cust])

    def silence(self, cust: int, from_day: float, to_day: float, *, keep: int) -> None:
        """Remove the customer's events between the two days (a dormant spell), except those
        of scenario ``keep``; the other side of any transfer removed goes too."""
        world = self.world
        world.silent[cust] = True
        world.silences.append((cust, self.at(from_day), self.at(to_day), keep))


Injector = Callable[[Context], int]
"""Writes one scenario and returns how many events it added (0: impossible here)."""
