"""The simulated bank's world: customers with stable profiles, and the counterparties they share.

Counterparty pools are finite and shared on purpose (a grocery chain's terminals, a landlord
with many tenants, an employer paying many customers), so per-counterparty history in the
context store means something, and a compromised terminal or a mule's beneficiary stands out
against counterparties that many customers use legitimately.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas import CounterpartyType
from stream.simulate import catalog as cat
from stream.simulate.config import SimulationConfig
from stream.simulate.frame import Column, Counterparties, StringTable

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

ACCOUNT = cat.code(cat.COUNTERPARTY_TYPES, CounterpartyType.ACCOUNT)
MERCHANT = cat.code(cat.COUNTERPARTY_TYPES, CounterpartyType.MERCHANT)
ATM = cat.code(cat.COUNTERPARTY_TYPES, CounterpartyType.ATM)
BRANCH = cat.code(cat.COUNTERPARTY_TYPES, CounterpartyType.BRANCH)
EXCHANGE = cat.code(cat.COUNTERPARTY_TYPES, CounterpartyType.EXCHANGE)

RETAIL, BUSINESS = 0, 1
STORE, ONLINE, BILLER, SUBSCRIPTION, SUPPLIES = range(5)  # merchant kinds
FAVOURITE_STORES, FAVOURITE_SHOPS = 12, 6
# Favourite slot k is used with weight 1/(k+1): a few places dominate, as in real card data.
FAVOURITE_WEIGHTS = 1.0 / np.arange(1, FAVOURITE_STORES + 1)
FAVOURITE_WEIGHTS /= FAVOURITE_WEIGHTS.sum()
SHOP_WEIGHTS = 1.0 / np.arange(1, FAVOURITE_SHOPS + 1)
SHOP_WEIGHTS /= SHOP_WEIGHTS.sum()


@dataclass
class Merchants:
    cp: Column  # counterparty index
    mcc: Column  # code in catalog.MCCS
    country: Column
    kind: Column
    popularity: FloatArray
    first_terminal: Column  # -1 for merchants without terminals
    n_terminals: Column

    def pool(self, kind: int, country: int | None = None) -> tuple[Column, FloatArray]:
        """Merchants of one kind (optionally one country) and their popularity as weights."""
        mask = self.kind == kind
        if country is not None:
            mask &= self.country == country
        members = np.flatnonzero(mask).astype(np.int64)
        weights = self.popularity[members]
        return members, weights / weights.sum()


@dataclass
class Customers:
    """Per-customer profile arrays; row i is customer i (customer id ``cus-<i>``)."""

    segment: Column
    home: Column  # country code
    devices: Column  # (n, 2) device index, -1 when there is no second device
    ips: Column  # (n, 2)
    income_usd: FloatArray  # monthly income (retail) or monthly turnover (business)
    spend_scale: FloatArray
    card_rate: FloatArray  # card-present purchases per day
    online_rate: FloatArray
    atm_rate: FloatArray
    p2p_rate: FloatArray
    crypto_rate: FloatArray
    stores: Column  # (n, 12) favourite card-present merchants (merchant index)
    shops: Column  # (n, 6) favourite online merchants
    employer: Column  # business customer index paying the salary, or -1
    ext_employer: Column  # index into World.employers when paid by an outside employer, or -1
    housing_cp: Column  # landlord / lender counterparty, -1 for owners without a mortgage
    housing_usd: FloatArray
    housing_day: Column  # day of month
    bills: Column  # (n, 3) biller merchants, -1 unused
    bill_usd: FloatArray  # (n, 3)
    bill_day: Column  # (n, 3)
    subscriptions: Column  # (n, 4) subscription merchants, -1 unused
    subscription_usd: FloatArray
    subscription_day: Column
    friends: Column  # (n, 3) other customers paid by P2P
    ext_friends: Column  # (n, 2) friends' accounts at other banks
    own_elsewhere: Column  # the customer's own account at another bank (savings, brokerage)
    atms: Column  # (n, 2) usual ATM counterparties
    branch: Column  # usual branch counterparty
    exchange: Column  # crypto exchange counterparty used
    suppliers: Column  # (n, 4) business suppliers (counterparties), -1 for retail
    cash_intensive: BoolArray  # business taking cash (restaurants, shops)
    ext_staff_first: Column  # business: first counterparty of its outside employees
    ext_staff_count: Column

    @property
    def n(self) -> int:
        return len(self.segment)


@dataclass
class Employers:
    """Who pays salaries: business customers of the bank and outside employers, with paydays."""

    cp: Column  # counterparty of the payer
    monthly_day: Column  # day of month, or -1 when paid every two weeks
    biweekly_offset: Column  # first payday (day of the run) for two-weekly payers


@dataclass
class OpaqueIds:
    """Ids for accounts, devices and networks: a hash of a counter, so they are opaque (an id
    must never reveal that an account is a mule's) and deterministic (same seed, same ids)."""

    seed: int
    counter: int = 0

    def make(self, prefix: str, count: int) -> list[str]:
        first, self.counter = self.counter, self.counter + count
        return [
            f"{prefix}-{hashlib.blake2b(f'{self.seed}/{i}'.encode(), digest_size=7).hexdigest()}"
            for i in range(first, first + count)
        ]


@dataclass
class Places:
    """Shared counterparty pools (counterparty indexes)."""

    landlords: Column
    suppliers: Column
    clients: Column
    acquirers: Column
    atms: Column
    branches: Column
    exchanges: Column


@dataclass
class World:
    config: SimulationConfig
    customers: Customers
    merchants: Merchants
    places: Places
    employers: Employers  # outside employers; Customers.ext_employer indexes into these
    business_paydays: Employers  # one row per customer, used for business customers
    counterparties: Counterparties
    terminals: StringTable
    devices: StringTable
    ips: StringTable
    ids: OpaqueIds
    customer_ids: list[str]
    account_ids: list[str]
    scam_mules: list[int] = field(default_factory=list)
    """Mule accounts APP scams of this run pay into (reused: a mule collects from several)."""
    brokerages: list[int] = field(default_factory=list)
    """Brokerages' collection accounts that honest customers fund (made on first use)."""
    scenarios: list[tuple[str, str]] = field(default_factory=list)  # (scenario id, kind)
    # (customer, from_ms, to_ms, scenario kept): the customer's other events in the window are
    # removed (dormant spells)
    silences: list[tuple[int, int, int, int]] = field(default_factory=list)
    tag: str = field(init=False)
    busy: BoolArray = field(init=False)
    silent: BoolArray = field(init=False)

    def __post_init__(self) -> None:
        self.tag = self.config.run_tag  # hashing the config is too slow to repeat per scenario
        # Customers already playing the lead in a scenario: one such part per customer keeps
        # each customer's story readable and the truth unambiguous.
        self.busy = np.zeros(self.customers.n, dtype=bool)
        # Customers with a dormant spell: nobody else's scenario may involve them.
        self.silent = np.zeros(self.customers.n, dtype=bool)

    @property
    def start_ms(self) -> int:
        midnight = dt.datetime.combine(self.config.start_date, dt.time(), dt.UTC)
        return int(midnight.timestamp()) * 1000

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.config.days * DAY_MS

    @property
    def days(self) -> int:
        return self.config.days

    def weekday(self, day: int) -> int:
        return (self.config.start_date.weekday() + day) % 7

    def new_accounts(self, count: int, countries: npt.ArrayLike) -> Column:
        """Fresh accounts at other banks (beneficiaries, originators), as counterparties."""
        return self.counterparties.extend(self.ids.make("ext", count), ACCOUNT, countries)

    def new_device(self) -> int:
        return self.devices.add(self.ids.make("dev", 1)[0])

    def new_ip(self) -> int:
        return self.ips.add(self.ids.make("ip", 1)[0])

    def add_scenario(self, kind: str) -> int:
        scenario_id = f"sc-{self.tag}-{len(self.scenarios):06d}"
        self.scenarios.append((scenario_id, kind))
        return len(self.scenarios) - 1


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> FloatArray:
    return median * np.exp(sigma * rng.standard_normal(n))


def _pick(rng: np.random.Generator, members: Column, weights: FloatArray, shape: object) -> Column:
    return members[rng.choice(len(members), size=shape, p=weights)]  # type: ignore[call-overload]


def _build_merchants(
    world_cps: Counterparties, terminals: StringTable, n: int, rng: np.random.Generator
) -> Merchants:
    store_w = np.array([c.store for c in cat.CATEGORIES], dtype=np.float64)
    online_w = np.array([c.online for c in cat.CATEGORIES], dtype=np.float64)
    n_store, n_online = max(120, int(n * 0.4)), max(60, int(n * 0.12))
    n_biller, n_subs, n_supplies = max(12, n // 150), max(10, n // 200), max(10, n // 100)
    travel = [c for c in cat.COUNTRIES_TABLE if c.travel > 0]
    foreign_online = [c for c in cat.COUNTRIES_TABLE if c.merchants > 0]

    # Card-present: mostly domestic, at least a handful in every travel destination.
    per_country = np.maximum(4, np.rint(np.array([c.travel for c in travel]) * n_store / 400))
    store_country = np.r_[
        np.full(n_store, cat.US),
        np.repeat([cat.COUNTRY_INDEX[c.code] for c in travel], per_country.astype(np.int64)),
    ]
    online_weights = np.array([c.merchants for c in foreign_online])
    online_foreign = rng.random(n_online) < 0.15
    online_country = np.where(
        online_foreign,
        np.array([cat.COUNTRY_INDEX[c.code] for c in foreign_online])[
            rng.choice(len(foreign_online), size=n_online, p=online_weights / online_weights.sum())
        ],
        cat.US,
    )
    n_store = len(store_country)

    def category_codes(mccs: tuple[str, ...], size: int) -> Column:
        return np.array([cat.MCC_INDEX[m] for m in mccs])[rng.integers(0, len(mccs), size)]

    mcc = np.r_[
        rng.choice(len(cat.CATEGORIES), size=n_store, p=store_w / store_w.sum()),
        rng.choice(len(cat.CATEGORIES), size=n_online, p=online_w / online_w.sum()),
        category_codes(cat.BILLER_MCCS, n_biller),
        category_codes(cat.SUBSCRIPTION_MCCS, n_subs),
        category_codes(cat.BUSINESS_MCCS, n_supplies),
    ].astype(np.int64)
    kind = np.repeat(
        [STORE, ONLINE, BILLER, SUBSCRIPTION, SUPPLIES],
        [n_store, n_online, n_biller, n_subs, n_supplies],
    )
    country = np.r_[
        store_country, online_country, np.full(n_biller + n_subs + n_supplies, cat.US)
    ].astype(np.int64)
    total = len(kind)
    popularity = np.exp(rng.standard_normal(total))
    ids = [f"mer-{i:07d}" for i in range(total)]
    cps = world_cps.extend(ids, MERCHANT, country)

    # Terminals for stores (and for business-supplies merchants, bought from in person).
    has_terminals = (kind == STORE) | (kind == SUPPLIES)
    n_terminals = np.where(has_terminals, rng.integers(1, 5, total), 0).astype(np.int64)
    first_terminal = np.full(total, -1, dtype=np.int64)
    for merchant in np.flatnonzero(has_terminals):
        first_terminal[merchant] = len(terminals)
        terminals.extend([f"trm-{merchant:07d}-{k}" for k in range(n_terminals[merchant])])
    return Merchants(cps, mcc, country, kind, popularity, first_terminal, n_terminals)


def _paydays(rng: np.random.Generator, cps: Column) -> Employers:
    count = len(cps)
    monthly = rng.random(count) < 0.6
    return Employers(
        cp=cps,
        monthly_day=np.where(monthly, rng.choice([1, 15, 25, 26, 27, 28], count), -1),
        biweekly_offset=rng.integers(0, 14, count),
    )


def size_of(income: FloatArray) -> FloatArray:
    """A business's size relative to the median business (turnover of 60,000 a month)."""
    return np.maximum(income / 60_000, 0.05)


def build_world(config: SimulationConfig) -> World:
    """The population and its counterparties, drawn from the seed alone (not from the typology
    mix), so changing the mix or introducing a typology keeps the same customers and background.

    Every step draws from one generator in a fixed order: reordering the steps changes the
    world a seed gives.
    """
    rng = np.random.default_rng([config.seed, 1])
    n = config.customers
    cps, terminals, devices, ips = Counterparties(), StringTable(), StringTable(), StringTable()
    ids = OpaqueIds(config.seed)

    def accounts(count: int, foreign_share: float = 0.0) -> Column:
        # Some trading partners are abroad, offshore centres included: legitimate businesses
        # use them too, so a payment to Cyprus or Panama alone proves nothing.
        abroad = rng.random(count) < foreign_share
        where = np.array([cat.COUNTRY_INDEX[c] for c in cat.TRADE_PARTNER_COUNTRIES])
        countries = np.where(abroad, where[rng.integers(0, len(where), count)], cat.US)
        return cps.extend(ids.make("ext", count), ACCOUNT, countries)

    segment, home = _segments(rng, n, config.business_share)
    business = segment == BUSINESS
    customer_ids = [f"cus-{i:07d}" for i in range(n)]
    account_ids = [f"acc-{i:07d}" for i in range(n)]
    cps.extend(account_ids, ACCOUNT, home)  # customer i's own account is counterparty i

    merchants = _build_merchants(cps, terminals, n, rng)
    places = Places(
        landlords=accounts(max(10, n // 30)),
        suppliers=accounts(max(20, n // 12), foreign_share=0.2),
        clients=accounts(max(50, n // 3), foreign_share=0.08),
        acquirers=accounts(3),
        atms=cps.extend([f"atm-{i:05d}" for i in range(max(20, n // 25))], ATM, cat.US),
        branches=cps.extend([f"brn-{i:04d}" for i in range(max(4, n // 400))], BRANCH, cat.US),
        exchanges=cps.extend([f"exc-{i:02d}" for i in range(6)], EXCHANGE, cat.US),
    )
    employers = _paydays(rng, accounts(max(5, n // 80)))
    business_paydays = _paydays(rng, np.arange(n, dtype=np.int64))

    # Devices and networks a customer usually banks from; -1 where there is no second one.
    second = rng.random(n) < np.where(business, 0.7, 0.35)
    device_ids = devices.extend(ids.make("dev", 2 * n)).reshape(n, 2)
    ip_ids = ips.extend(ids.make("ip", 2 * n)).reshape(n, 2)
    device_ids[~second, 1] = -1
    ip_ids[~second, 1] = -1

    income = np.where(
        business,
        _lognormal(rng, 60_000, 0.8, n),
        np.clip(_lognormal(rng, 4_200, 0.5, n), 1_200, 40_000),
    )
    spend_scale = np.exp(0.35 * rng.standard_normal(n)) * np.where(
        business, 1.5, (income / 4_200) ** 0.3
    )
    stores, shops = _favourite_merchants(rng, merchants, home)
    jobs = _jobs(rng, business, income, len(employers.cp), accounts)
    housing_cp, housing_usd = _housing(rng, business, income, places.landlords)
    regular = _regular_payments(rng, merchants, n)

    customers = Customers(
        segment=segment,
        home=home,
        devices=device_ids,
        ips=ip_ids,
        income_usd=income,
        spend_scale=spend_scale,
        card_rate=np.where(business, 0.6, 1.0) * rng.gamma(2.0, 0.8, n),
        online_rate=np.where(business, 0.3, 1.0) * rng.gamma(1.5, 0.3, n),
        atm_rate=np.where(business, 0.02, 1.0) * rng.gamma(1.5, 0.08, n),
        p2p_rate=np.where(business, 0.0, 1.0) * rng.gamma(1.5, 0.05, n),
        crypto_rate=np.where(rng.random(n) < 0.05, rng.uniform(0.03, 0.2, n), 0.0),
        stores=stores,
        shops=shops,
        employer=jobs.employer,
        ext_employer=jobs.ext_employer,
        housing_cp=housing_cp,
        housing_usd=housing_usd,
        housing_day=rng.integers(1, 6, n),
        bills=regular.bills,
        bill_usd=regular.bill_usd,
        bill_day=rng.integers(1, 29, (n, 3)),
        subscriptions=regular.subscriptions,
        subscription_usd=rng.choice([4.99, 7.99, 9.99, 12.99, 15.49, 19.99], (n, 4)),
        subscription_day=regular.subscription_day,
        friends=jobs.retail_rows[rng.integers(0, len(jobs.retail_rows), (n, 3))],
        ext_friends=accounts(2 * n).reshape(n, 2),
        own_elsewhere=accounts(n),
        atms=places.atms[rng.integers(0, len(places.atms), (n, 2))],
        branch=places.branches[rng.integers(0, len(places.branches), n)],
        exchange=places.exchanges[rng.integers(0, len(places.exchanges), n)],
        suppliers=np.where(
            business[:, None], places.suppliers[rng.integers(0, len(places.suppliers), (n, 4))], -1
        ),
        cash_intensive=business & (rng.random(n) < 0.35),
        ext_staff_first=jobs.staff_first,
        ext_staff_count=jobs.staff_count,
    )
    return World(
        config=config,
        customers=customers,
        merchants=merchants,
        places=places,
        employers=employers,
        business_paydays=business_paydays,
        counterparties=cps,
        terminals=terminals,
        devices=devices,
        ips=ips,
        ids=ids,
        customer_ids=customer_ids,
        account_ids=account_ids,
    )


def _segments(rng: np.random.Generator, n: int, business_share: float) -> tuple[Column, Column]:
    """(segment, home country) per customer: the business share, and a few retail customers
    living abroad."""
    segment = np.zeros(n, dtype=np.int64)
    n_business = round(n * business_share)
    segment[: max(2, n_business) if business_share > 0 else 0] = BUSINESS
    rng.shuffle(segment)
    business = segment == BUSINESS
    expats = np.array([cat.COUNTRY_INDEX[c] for c in ("CA", "GB", "MX", "DE", "FR")])
    abroad = (rng.random(n) < 0.03) & ~business
    home = np.where(abroad, expats[rng.integers(0, len(expats), n)], cat.US).astype(np.int64)
    return segment, home


def _favourite_merchants(
    rng: np.random.Generator, merchants: Merchants, home: Column
) -> tuple[Column, Column]:
    """(stores in the customer's home country, online shops), by merchant popularity."""
    n = len(home)
    stores = np.empty((n, FAVOURITE_STORES), dtype=np.int64)
    for country in np.unique(home):
        members, weights = merchants.pool(STORE, int(country))
        rows = np.flatnonzero(home == country)
        stores[rows] = _pick(rng, members, weights, (len(rows), FAVOURITE_STORES))
    shop_members, shop_weights = merchants.pool(ONLINE)
    shops = _pick(rng, shop_members, shop_weights, (n, FAVOURITE_SHOPS))
    return stores, shops


@dataclass
class _Jobs:
    retail_rows: Column
    employer: Column
    """The business customer a retail customer works for; -1: none here."""
    ext_employer: Column
    """Index into the outside employers; -1: none."""
    staff_count: Column
    staff_first: Column
    """A business's first outside staff account; -1: no staff."""


def _jobs(
    rng: np.random.Generator,
    business: BoolArray,
    income: FloatArray,
    outside_employers: int,
    accounts: Callable[[int], Column],
) -> _Jobs:
    """Salaries: about a third of retail customers work for a business that banks here too, so
    payroll shows on both sides; the rest are paid by outside employers; a few (retired,
    students) by nobody. Businesses pay staff who bank elsewhere."""
    n = len(business)
    retail_rows, business_rows = np.flatnonzero(~business), np.flatnonzero(business)
    employer = np.full(n, -1, dtype=np.int64)
    inside = retail_rows[rng.random(len(retail_rows)) < (0.3 if len(business_rows) else 0.0)]
    if len(inside):
        size = size_of(income[business_rows])
        picks = rng.choice(len(business_rows), len(inside), p=size / size.sum())
        employer[inside] = business_rows[picks]
    ext_employer = np.where(
        (employer < 0) & ~business & (rng.random(n) > 0.05),
        rng.integers(0, outside_employers, n),
        -1,
    )
    staff_count = np.where(business, np.rint(size_of(income) * rng.uniform(3, 25, n)), 0)
    staff_count = staff_count.astype(np.int64)
    staff_first = np.full(n, -1, dtype=np.int64)
    for b in business_rows:
        if staff_count[b] > 0:
            staff_first[b] = accounts(int(staff_count[b]))[0]
    return _Jobs(retail_rows, employer, ext_employer, staff_count, staff_first)


def _housing(
    rng: np.random.Generator, business: BoolArray, income: FloatArray, landlords: Column
) -> tuple[Column, FloatArray]:
    """(landlord counterparty, -1 for owners; monthly rent in USD)."""
    n = len(business)
    housing_cp = np.where(rng.random(n) < 0.7, landlords[rng.integers(0, len(landlords), n)], -1)
    housing_usd = np.where(
        business,
        rng.uniform(2_000, 20_000, n),
        np.clip(income * rng.uniform(0.22, 0.38, n), 600, 9_000),
    )
    # Many rents sit just under a round number (1,995 rather than 2,000): at business scale
    # (9,950) that is a structuring look-alike living in plain background traffic.
    just_under = rng.random(n) < 0.35
    housing_usd = np.where(
        just_under,
        np.ceil(housing_usd / 500) * 500 - rng.choice([5, 10, 50], n),
        np.rint(housing_usd / 25) * 25,
    )
    return housing_cp, housing_usd


@dataclass
class _RegularPayments:
    bills: Column
    bill_usd: FloatArray
    subscriptions: Column
    subscription_day: Column


def _regular_payments(rng: np.random.Generator, merchants: Merchants, n: int) -> _RegularPayments:
    """Up to three billers and four subscriptions per customer; -1 where there is none."""
    biller_members, biller_weights = merchants.pool(BILLER)
    bills = _pick(rng, biller_members, biller_weights, (n, 3))
    bills[rng.random((n, 3)) < np.array([0.05, 0.25, 0.6])] = -1
    bill_usd = cat.MCC_MEDIAN_USD[merchants.mcc[np.maximum(bills, 0)]] * np.exp(
        0.3 * rng.standard_normal((n, 3))
    )
    sub_members, sub_weights = merchants.pool(SUBSCRIPTION)
    subscriptions = _pick(rng, sub_members, sub_weights, (n, 4))
    subscriptions[rng.random((n, 4)) < np.array([0.3, 0.5, 0.7, 0.85])] = -1
    # Renewals bunch on the 1st of the month: a card-testing look-alike in plain background.
    subscription_day = np.where(rng.random((n, 4)) < 0.4, 1, rng.integers(1, 29, (n, 4)))
    return _RegularPayments(bills, bill_usd, subscriptions, subscription_day)
