"""A small simulated run, written once per session and read back by the generation tests."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.simulate.config import SimulationConfig
from stream.simulate.engine import Simulation, simulate
from stream.simulate.writers import write_files

SMALL = SimulationConfig(customers=300, days=20, seed=11)

Row = dict[str, Any]


def read_jsonl(path: Path) -> list[Row]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@dataclass
class Run:
    sim: Simulation
    out: Path
    manifest: Row
    events: list[Row]
    truth: list[Row]
    labels: list[Row]

    def scenarios(self, kind: str) -> dict[str, list[tuple[Row, Row]]]:
        """scenario id -> [(event, truth)] in event-time order, for one scenario kind."""
        found: dict[str, list[tuple[Row, Row]]] = defaultdict(list)
        for event, truth in zip(self.events, self.truth, strict=True):
            if truth["scenario_kind"] == kind:
                found[truth["scenario_id"]].append((event, truth))
        return dict(found)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("simulation")
    sim = simulate(SMALL)
    manifest = write_files(sim, out, fmt="both", progress=False)
    return Run(
        sim=sim,
        out=out,
        manifest=manifest,
        events=read_jsonl(out / "events.jsonl"),
        truth=read_jsonl(out / "truth.jsonl"),
        labels=read_jsonl(out / "labels.jsonl"),
    )
