"""How much a single event gives away: a gradient-boosted model on one event's own fields only
(amount, channel, direction, MCC, country, device present, segment, hour, counterparty type,
memo, terminal present, currency, round amount), no history at all.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_simulate_difficulty

The simulator is meant to be hard on purpose: typologies visible only in history should score
low here, and the "partly visible" ones (docs/typologies.md) only moderately. Trained on the
first 18 days of a 4,000-customer, 30-day run at 1% prevalence, evaluated on the last 12:
average precision overall and per typology (each typology against all legitimate events).
"""

from __future__ import annotations

import argparse

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score

from stream.simulate import catalog as cat
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import simulate
from stream.simulate.population import DAY_MS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()

    sim = simulate(
        SimulationConfig(customers=args.customers, days=30, seed=args.seed, prevalence=0.01)
    )
    e, world = sim.events, sim.world
    usd = e["amount"] / cat.MINOR_PER_USD[e["currency"]]
    features = np.c_[
        np.log1p(usd),
        e["channel"],
        e["direction"],
        e["mcc"],
        e["country"],
        e["device"] >= 0,
        world.customers.segment[e["cust"]],
        (e["t_ms"] // 3_600_000) % 24,
        np.asarray(world.counterparties.kinds)[e["cp"]],
        e["memo"],
        e["terminal"] >= 0,
        e["currency"],
        (usd * 100) % 100 == 0,
    ]
    target = e["typology"] != 0
    train = e["t_ms"] < world.start_ms + 18 * DAY_MS
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, verbose=-1)
    model.fit(features[train], target[train])
    score = np.asarray(model.predict_proba(features[~train]))[:, 1]
    typology = e["typology"][~train]
    print(f"single-event average precision, all typologies: "
          f"{average_precision_score(target[~train], score):.3f} "
          f"(prevalence {target[~train].mean():.4f})")  # fmt: skip
    for code in range(1, len(cat.TYPOLOGIES)):
        mask = (typology == 0) | (typology == code)
        if (typology == code).any():
            ap = average_precision_score(typology[mask] == code, score[mask])
            print(f"  {cat.TYPOLOGIES[code].value:24s} {ap:.3f}")


if __name__ == "__main__":
    main()
