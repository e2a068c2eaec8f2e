"""Where a scorer run's CPU goes: per event, by step of the batch and by process.

The scorer times each step of a batch itself (``ScorerMetrics.stage``: wall time and the CPU
time of the thread running it); this module turns those counters into microseconds per event,
and adds the CPU the whole scorer process, the broker's JVM and redis-server spent over the
same run (read from /proc), so the budget also shows what runs beside the scorer on a shared
machine. The model step's thread CPU is its calling thread only: torch's helper threads are in
the process total.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.scorer.metrics import ScorerMetrics


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU of this process and of named others, from ``start()`` to ``per_event()``."""

    others: dict[str, int] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        now = {name: process_cpu_s(pid) for name, pid in self.others.items()}
        now["scorer process"] = time.process_time()
        return now

    def start(self) -> None:
        self._start = self._now()

    def per_event(self, events: int) -> dict[str, float]:
        """Microseconds of CPU per event of each process since ``start()``."""
        now = self._now()
        return {
            name: round((now[name] - self._start.get(name, 0.0)) / max(events, 1) * 1e6, 1)
            for name in now
        }


def stage_budget(metrics: ScorerMetrics, events: int) -> dict[str, dict[str, float]]:
    """Microseconds per event of each step: ``wall`` and the running thread's ``cpu``."""
    registry = metrics.registry
    budget: dict[str, dict[str, float]] = {}
    for family in registry.collect():
        if family.name not in ("riskstream_stage_seconds", "riskstream_stage_cpu_seconds"):
            continue
        kind = "wall" if family.name == "riskstream_stage_seconds" else "cpu"
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            stage = sample.labels["stage"]
            budget.setdefault(stage, {})[kind] = round(sample.value / max(events, 1) * 1e6, 1)
    return budget


def budget_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: one per stage, a column per run (µs per event, thread CPU / wall)."""
    names = list(runs)
    stages: list[str] = []
    for result in runs.values():
        stages.extend(s for s in result.get("stages", {}) if s not in stages)
    lines = [
        "| step | " + " | ".join(f"{n}: CPU / wall µs per event" for n in names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for stage in stages:
        cells = []
        for name in names:
            entry = runs[name].get("stages", {}).get(stage, {})
            cells.append(f"{entry.get('cpu', 0):.1f} / {entry.get('wall', 0):.1f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    processes: list[str] = []
    for result in runs.values():
        processes.extend(p for p in result.get("process_cpu", {}) if p not in processes)
    for process in processes:
        cells = [f"{runs[n].get('process_cpu', {}).get(process, 0):.1f}" for n in names]
        lines.append(f"| CPU of {process} | " + " | ".join(cells) + " |")
    return lines
