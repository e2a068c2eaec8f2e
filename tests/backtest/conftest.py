"""A hand-made run: twelve scored events whose every figure is worked out by hand in the tests.

    seq id   day time  score  alert  truth                 scenario   predicted
    0   e01  1   08:00  0.10         legitimate            -          card_testing
    1   e02  1   09:00  0.35         mule_fan_in_out       S1         mule_fan_in_out
    2   e03  1   10:00  0.55   yes   legitimate            -          structuring
    3   e04  1   11:00  0.80   yes   mule_fan_in_out       S1         mule_fan_in_out
    4   e05  1   12:00  0.20         card_testing          S2         card_testing
    5   e06  1   13:00  0.15         card_testing          S2         card_testing
    6   e07  2   08:00  0.90   yes   mule_fan_in_out       S1         pass_through
    7   e08  2   09:00  0.30         legitimate            L1 (a look-alike)
    8   e09  2   10:00  0.60   yes   legitimate            -          structuring
    9   e10  2   11:00  0.70   yes   structuring           S3 (one event)
    10  e11  2   12:00  0.05         legitimate            -
    11  e12  2   13:00  0.45         card_testing          S2

The threshold is 0.5. Each alert was read at 10:00:00.000 on its event's day plus a delay,
scored 100/200/300/400/1000 ms later (in alert order) and emitted 50 ms after scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream.replay.manifest import (
    ALERTS_FILE,
    SCORES_FILE,
    LabelsUsed,
    RunManifest,
    RunTimings,
)
from stream.replay.outputs import SCORES_SCHEMA

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
THRESHOLD = 0.5


@dataclass(frozen=True)
class Row:
    event_id: str
    time: datetime
    score: float
    truth: str
    scenario: str | None
    predicted: str

    @property
    def alerted(self) -> bool:
        return self.score >= THRESHOLD


def _at(day: datetime, hour: int) -> datetime:
    return day + timedelta(hours=hour)


ROWS = [
    Row("e01", _at(DAY1, 8), 0.10, "legitimate", None, "card_testing"),
    Row("e02", _at(DAY1, 9), 0.35, "mule_fan_in_out", "S1", "mule_fan_in_out"),
    Row("e03", _at(DAY1, 10), 0.55, "legitimate", None, "structuring"),
    Row("e04", _at(DAY1, 11), 0.80, "mule_fan_in_out", "S1", "mule_fan_in_out"),
    Row("e05", _at(DAY1, 12), 0.20, "card_testing", "S2", "card_testing"),
    Row("e06", _at(DAY1, 13), 0.15, "card_testing", "S2", "card_testing"),
    Row("e07", _at(DAY2, 8), 0.90, "mule_fan_in_out", "S1", "pass_through"),
    Row("e08", _at(DAY2, 9), 0.30, "legitimate", "L1", "card_testing"),
    Row("e09", _at(DAY2, 10), 0.60, "legitimate", None, "structuring"),
    Row("e10", _at(DAY2, 11), 0.70, "structuring", "S3", "structuring"),
    Row("e11", _at(DAY2, 12), 0.05, "legitimate", None, "card_testing"),
    Row("e12", _at(DAY2, 13), 0.45, "card_testing", "S2", "card_testing"),
]
SCORED_AFTER_MS = [100, 200, 300, 400, 1000]  # per alert, in alert order
EMITTED_AFTER_SCORED_MS = 50
RECEIVED_TO_SCORED_OTHERS_MS = 20  # events without an alert


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def truth_lines() -> list[bytes]:
    """truth.jsonl rows as the simulator writes them."""
    return [
        orjson.dumps(
            {
                "event_id": r.event_id,
                "event_time": _rfc3339(r.time),
                "customer_id": f"cus-{r.event_id}",
                "typology": r.truth,
                "is_suspicious": r.truth != "legitimate",
                "scenario_id": r.scenario,
                "scenario_kind": "background" if r.scenario is None else f"x:{r.truth}",
                "role": "customer",
                "counterparty_id": "mer-1",
                "terminal_id": None,
            }
        )
        for r in ROWS
    ]


def write_run(home: Path, run_id: str, scores: list[float] | None = None) -> Path:
    """A run directory as `riskstream replay` leaves it, for the rows above (optionally with
    other scores, as another model would give; alerts follow the threshold)."""
    folder = home / "runs" / run_id
    folder.mkdir(parents=True)
    rows = [
        Row(r.event_id, r.time, s, r.truth, r.scenario, r.predicted)
        for r, s in zip(ROWS, scores or [r.score for r in ROWS], strict=True)
    ]
    received, scored, alert_lines = [], [], []
    alert_number = 0
    for row in rows:
        read_at = row.time + timedelta(seconds=5)
        if row.alerted:
            scored_at = read_at + timedelta(milliseconds=SCORED_AFTER_MS[alert_number % 5])
            alert_number += 1
            alert_lines.append(
                orjson.dumps(
                    {
                        "alert_id": f"alert-{row.event_id}",
                        "event": {"event_id": row.event_id},
                        "score": row.score,
                        "received_at": _rfc3339(read_at),
                        "scored_at": _rfc3339(scored_at),
                        "emitted_at": _rfc3339(
                            scored_at + timedelta(milliseconds=EMITTED_AFTER_SCORED_MS)
                        ),
                    }
                )
            )
        else:
            scored_at = read_at + timedelta(milliseconds=RECEIVED_TO_SCORED_OTHERS_MS)
        received.append(read_at)
        scored.append(scored_at)
    table = pa.table(
        {
            "seq": list(range(len(rows))),
            "event_id": [r.event_id for r in rows],
            "customer_id": [f"cus-{r.event_id}" for r in rows],
            "event_time": [r.time for r in rows],
            "score": [r.score for r in rows],
            "typology": [r.predicted for r in rows],
            "alert_id": [f"alert-{r.event_id}" if r.alerted else None for r in rows],
            "source": [f"file:events.jsonl[0]@{i + 1}" for i in range(len(rows))],
            "broker_time": [None] * len(rows),
            "received_at": received,
            "scored_at": scored,
        },
        schema=SCORES_SCHEMA,
    )
    pq.write_table(table, folder / SCORES_FILE)
    (folder / ALERTS_FILE).write_bytes(b"".join(line + b"\n" for line in alert_lines))
    RunManifest(
        run_id=run_id,
        status="completed",
        model_version=f"model-of-{run_id}",
        alert_threshold=THRESHOLD,
        narrative_version="n-test",
        source={"kind": "file", "path": str(home / "nowhere" / "events.jsonl")},
        labels=LabelsUsed(source=None, reveal_delay_s=0.0),
        namespace=f"backtest-{run_id}",
        state_kept=False,
        output_topic=f"risk.alerts.backtest.{run_id}",
        output_partitions=1,
        batch_size=64,
        speed=None,
        timings=RunTimings(started_at=DAY2 + timedelta(days=30)),
    ).write(folder)
    return folder


@pytest.fixture
def truth_file(tmp_path: Path) -> Path:
    path = tmp_path / "truth.jsonl"
    path.write_bytes(b"\n".join(truth_lines()) + b"\n")
    return path
