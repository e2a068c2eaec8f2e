"""Shared helpers of the background generators: when things happen (Poisson counts shaped by
the weekday, hours drawn from a daily profile, monthly and two-weekly schedules) and from which
device."""

from __future__ import annotations

import datetime as dt

import numpy as np

from stream.simulate import catalog as cat
from stream.simulate.catalog import FloatArray
from stream.simulate.frame import Column
from stream.simulate.population import HOUR_MS, Employers, World


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
