"""Reading what a report needs: a run's files, the truth (simulator truth or labels), and the
broker's timestamps of the run's alerts. The I/O edge of `stream.backtest`; the figures
themselves are computed in `report`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import pyarrow.parquet as pq

from schemas import LabelEvent, Typology
from schemas.alert import ALERT_ID_HEADER
from stream.backtest.errors import BacktestError
from stream.backtest.report import AlertTiming, ScoreTable, TruthRow
from stream.replay.errors import SourceError
from stream.replay.manifest import ALERTS_FILE, SCORES_FILE, RunManifest, run_dir
from stream.replay.sources import TopicSource, from_ms, to_ms
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    directory: Path
    manifest: RunManifest
    table: ScoreTable
    alerts: list[AlertTiming]
    alert_ids: list[str]
    scored_latency_ms: list[float]
    """Read-to-scored time of every event (from scores.parquet)."""


def load_run(home: Path, run_id: str) -> RunData:
    directory = run_dir(home, run_id)
    if not directory.is_dir():
        raise BacktestError(f"no run {run_id!r} in {directory.parent}")
    manifest = RunManifest.read(directory)
    if manifest.status != "completed":
        log.warning("run %s is %s: the report covers what it scored", run_id, manifest.status)
    scores_path = directory / SCORES_FILE
    if not scores_path.is_file():
        raise BacktestError(f"{scores_path} is missing")
    columns = pq.read_table(scores_path).sort_by("seq").to_pydict()
    table = ScoreTable(
        event_ids=columns["event_id"],
        event_time_ms=np.array([to_ms(t) for t in columns["event_time"]], dtype=np.int64),
        scores=np.asarray(columns["score"], dtype=np.float64),
        alerted=np.array([a is not None for a in columns["alert_id"]], dtype=np.bool_),
        predicted=columns["typology"],
    )
    scored_latency = [
        (scored - received).total_seconds() * 1000
        for received, scored in zip(columns["received_at"], columns["scored_at"], strict=True)
    ]
    alerts, alert_ids = read_alert_timings(directory / ALERTS_FILE)
    return RunData(directory, manifest, table, alerts, alert_ids, scored_latency)


def read_alert_timings(path: Path) -> tuple[list[AlertTiming], list[str]]:
    timings: list[AlertTiming] = []
    ids: list[str] = []
    if not path.is_file():
        return timings, ids
    with path.open("rb") as file:
        for line in file:
            if not line.strip():
                continue
            alert = orjson.loads(line)
            ids.append(alert["alert_id"])
            timings.append(
                AlertTiming(
                    received_at=datetime.fromisoformat(alert["received_at"]),
                    scored_at=datetime.fromisoformat(alert["scored_at"]),
                    emitted_at=datetime.fromisoformat(alert["emitted_at"]),
                )
            )
    return timings, ids


def with_landing_times(
    alerts: list[AlertTiming], alert_ids: list[str], landed_ms: dict[str, int]
) -> list[AlertTiming]:
    return [
        AlertTiming(a.received_at, a.scored_at, a.emitted_at, from_ms(landed_ms[i]))
        if i in landed_ms
        else a
        for a, i in zip(alerts, alert_ids, strict=True)
    ]


def broker_timestamps(
    kafka: KafkaSettings, topic: str, *, timeout_s: float = 30.0
) -> dict[str, int]:
    """alert id -> broker timestamp (ms) of its first copy on ``topic``; raises BacktestError
    when the topic is gone (e.g. deleted, or past retention) or stops delivering."""
    try:
        source = TopicSource(
            kafka,
            topic,
            group_id=f"riskstream-report-{uuid.uuid4().hex[:8]}",
            stall_timeout_s=timeout_s,
        )
    except SourceError as error:
        raise BacktestError(str(error)) from error
    landed: dict[str, int] = {}
    try:
        for record in source.records():
            alert_id = dict(record.headers).get(ALERT_ID_HEADER)
            if alert_id and record.timestamp_ms is not None and record.timestamp_ms > 0:
                landed.setdefault(alert_id.decode(errors="replace"), record.timestamp_ms)
    except SourceError as error:
        raise BacktestError(str(error)) from error
    finally:
        source.close()
    return landed


# -- truth ------------------------------------------------------------------------------------

TruthKind = Literal["truth", "labels-file", "labels-topic"]


@dataclass(frozen=True)
class TruthChoice:
    """What the report judges the run by: a simulator truth file, or labels (file or topic)."""

    kind: TruthKind
    where: str

    def describe(self) -> str:
        return f"{self.kind} {self.where}"


def truth_from_file(path: Path) -> dict[str, TruthRow]:
    """A simulator's truth.jsonl / truth.parquet: every event's typology and scenario."""
    from stream.simulate.truth import read_truth

    if not path.is_file():
        raise BacktestError(f"{path} is not a file")
    return {
        event_id: TruthRow(record.typology.value, record.scenario_id)
        for event_id, record in read_truth(path).items()
    }


def truth_from_labels(labels: list[LabelEvent]) -> dict[str, TruthRow]:
    """Per labelled event, the label that decides: the highest-ranked source, the latest
    within a rank (``models.targets.resolve_labels``, as training resolves them); events
    without a label are not in the mapping and count as legitimate in the report."""
    from models.targets import resolve_labels

    return {
        event_id: TruthRow(
            label.typology.value if label.is_suspicious else Typology.LEGITIMATE.value,
            label.scenario_id,
        )
        for event_id, label in resolve_labels(labels).items()
    }


def default_truth(manifest: RunManifest) -> TruthChoice | None:
    """Where the run's truth most likely is: ``truth.jsonl``/``.parquet`` beside a replayed
    file (simulator output), else the labels the run revealed."""
    if manifest.source.get("kind") == "file":
        folder = Path(manifest.source["path"]).parent
        for name in ("truth.jsonl", "truth.parquet"):
            if (folder / name).is_file():
                return TruthChoice("truth", str(folder / name))
    if manifest.labels.source:
        kind, _, where = manifest.labels.source.partition(":")
        return TruthChoice("labels-file" if kind == "file" else "labels-topic", where)
    return None
