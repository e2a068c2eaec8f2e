"""Ground truth of a simulated run, and analyst dispositions derived from it.

``truth.jsonl`` / ``truth.parquet`` hold one row per event (same order as the events file):
what training and backtests join on. A live system never sees it; it sees labels, and for
alerted events, analysts' dispositions, which :func:`analyst_dispositions` simulates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field

from schemas import LabelEvent, LabelSource, Typology
from schemas.common import Identifier, UtcDatetime
from stream.simulate.errors import SimulationError


class TruthRecord(BaseModel):
    """What one simulated event really was."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    event_time: UtcDatetime
    customer_id: Identifier
    typology: Typology = Field(description="`legitimate` for background and look-alikes.")
    is_suspicious: bool
    scenario_id: Identifier | None = Field(
        description="Links the events of one scenario (suspicious or look-alike); null otherwise."
    )
    scenario_kind: str = Field(
        description=(
            "`background`, `fraud:<typology>[:<variant>]`, `aml:<typology>`, `lookalike:<name>` "
            "or `skim:compromised_terminal` (genuine payments at a tampered terminal)."
        )
    )
    role: str = Field(description="customer, victim, subject, sender, origin or hop.")
    counterparty_id: Identifier
    terminal_id: Identifier | None


def read_truth(path: Path) -> dict[str, TruthRecord]:
    """event id -> truth, from ``truth.jsonl`` or ``truth.parquet``."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only for Parquet: keeps this module cheap to import

        rows = pq.read_table(path).to_pylist()
        records = [TruthRecord.model_validate(row) for row in rows]
    else:
        with path.open("rb") as file:
            records = [
                TruthRecord.model_validate(orjson.loads(line)) for line in file if line.strip()
            ]
    return {record.event_id: record for record in records}


def analyst_dispositions(
    alerted_event_ids: Iterable[str],
    truth: Mapping[str, TruthRecord],
    delay: dt.timedelta,
    *,
    alert_ids: Mapping[str, str] | None = None,
) -> list[LabelEvent]:
    """Labels an analyst would give the alerted events: true or false positive, from truth.

    ``label_time`` is the event time plus ``delay`` (the time to review an alert). Each event
    is dispositioned once, however often it was alerted; the label id derives from the event
    id, so repeating a disposition yields the same label (idempotent downstream).
    """
    if delay < dt.timedelta(0):
        raise ValueError("delay must not be negative")
    labels: list[LabelEvent] = []
    seen: set[str] = set()
    for event_id in alerted_event_ids:
        if event_id in seen:
            continue
        seen.add(event_id)
        record = truth.get(event_id)
        if record is None:
            raise SimulationError(f"event {event_id!r} is not in the truth of this simulation")
        labels.append(
            LabelEvent(
                label_id=f"an-{event_id}",
                event_id=event_id,
                customer_id=record.customer_id,
                event_time=record.event_time,
                label_time=record.event_time + delay,
                source=LabelSource.ANALYST,
                is_suspicious=record.is_suspicious,
                typology=record.typology,
                counterparty_id=record.counterparty_id,
                terminal_id=record.terminal_id,
                alert_id=(alert_ids or {}).get(event_id),
                scenario_id=record.scenario_id,
            )
        )
    return labels
