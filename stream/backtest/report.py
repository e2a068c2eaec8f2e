"""A backtest's figures, computed from data: the run's scores and alerts against the truth.

Pure functions only (numpy and scikit-learn, no files, Kafka or Redis), so every figure can be
checked against a hand computation. Definitions:

* An event is *suspicious* when its truth says so: a simulator's ``truth.jsonl``, or labels -
  where one label decides per event (the highest-ranked source, the latest within a rank, as
  in training: ``models.targets.resolve_labels``) and an event without any label counts as
  legitimate (the usual reading of partial labels; the report says which truth it used). With
  a label maturity, events younger than it are left out (:func:`mature_events`).
* *Alerted* means the run produced an alert for the event (score at or above the model's
  threshold). precision = alerted suspicious / alerted; recall = alerted suspicious /
  suspicious.
* PR-AUC is average precision over every scored event (scikit-learn's step-wise sum
  Σ (Rₙ − Rₙ₋₁)·Pₙ over the score thresholds, no interpolation).
* Alerts per day count by the UTC day of the event time, over every day from the first to the
  last event (days without alerts count as zero).
* Per-typology recall: for each true typology, the share of its events alerted.
* Time to detect, for scenarios with at least two suspicious events in the run: the 1-based
  position, in replay order, of the scenario's first alerted suspicious event, and the event
  time from the scenario's first event to it. Undetected scenarios have neither.
* Latency percentiles interpolate linearly between ranks (numpy's default), in milliseconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from schemas import Typology

LEGITIMATE = Typology.LEGITIMATE.value
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class ScoreTable:
    """Every scored event of a run, in replay order."""

    event_ids: list[str]
    event_time_ms: NDArray[np.int64]
    scores: NDArray[np.float64]
    alerted: NDArray[np.bool_]
    predicted: list[str]
    """The model's typology for each event (what it would be, were it suspicious)."""

    def __post_init__(self) -> None:
        n = len(self.event_ids)
        sizes = {len(self.event_time_ms), len(self.scores), len(self.alerted), len(self.predicted)}
        if sizes != {n}:
            raise ValueError("every column of a ScoreTable needs one value per event")

    def __len__(self) -> int:
        return len(self.event_ids)

    def subset(self, keep: NDArray[np.bool_]) -> ScoreTable:
        rows = np.flatnonzero(keep).tolist()
        return ScoreTable(
            event_ids=[self.event_ids[i] for i in rows],
            event_time_ms=self.event_time_ms[keep],
            scores=self.scores[keep],
            alerted=self.alerted[keep],
            predicted=[self.predicted[i] for i in rows],
        )


def mature_events(
    table: ScoreTable, newest_label_ms: int | None, maturity_days: float
) -> tuple[ScoreTable, int]:
    """The events old enough for their labels to be complete, and how many were younger.

    The rule of training and evaluation from labels (``models.targets``): an event counts only
    when ``event_time <= clock - maturity``, the clock being the newest event or label time;
    younger events are left out whether labelled or not."""
    if not len(table):
        return table, 0
    clock = int(table.event_time_ms.max())
    if newest_label_ms is not None:
        clock = max(clock, newest_label_ms)
    keep = table.event_time_ms <= clock - int(maturity_days * 86_400_000)
    return table.subset(keep), int((~keep).sum())


@dataclass(frozen=True)
class TruthRow:
    typology: str
    scenario_id: str | None = None

    @property
    def suspicious(self) -> bool:
        return self.typology != LEGITIMATE


@dataclass(frozen=True)
class AlertTiming:
    received_at: datetime
    scored_at: datetime
    emitted_at: datetime
    landed_at: datetime | None = None
    """The alert's broker timestamp on the run's topic (append time), when known."""


class Percentiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class DayCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    events: int
    alerts: int
    true_positives: int


class TypologyRecall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    typology: str
    events: int
    alerted: int
    recall: float


class ScenarioDetection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario_id: str
    typology: str
    events: int
    first_alert_event: int | None = Field(description="1-based, in replay order; None: missed.")
    hours_to_detect: float | None


class TimeToDetect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenarios: int
    detected: int
    detection_rate: float | None
    median_events: float | None
    mean_events: float | None
    median_hours: float | None
    per_typology: dict[str, Percentiles] = Field(
        description="Events to detect per typology (detected scenarios); count = scenarios."
    )
    per_scenario: list[ScenarioDetection]


class BacktestReport(BaseModel):
    """Everything `riskstream backtest report` prints, plots and writes as report.json."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    model_version: str
    alert_threshold: float
    truth_source: str
    events: int
    suspicious: int
    unmatched: int = Field(description="Scored events the truth does not mention.")
    alerts: int
    true_positives: int
    false_positives: int
    precision: float | None
    recall: float | None
    average_precision: float | None = Field(description="PR-AUC over every scored event.")
    typology_accuracy: float | None = Field(
        description="Alerted suspicious events whose typology the model named right."
    )
    days: int
    alerts_per_day: float | None
    per_day: list[DayCount]
    per_typology: list[TypologyRecall]
    time_to_detect: TimeToDetect
    latency_ms: dict[str, Percentiles]


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def average_precision(labels: NDArray[np.bool_], scores: NDArray[np.float64]) -> float | None:
    """scikit-learn's average precision; None without a single suspicious event."""
    if not labels.any():
        return None
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def percentiles(values: Sequence[float] | NDArray[np.float64]) -> Percentiles:
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return Percentiles(count=0)
    p50, p90, p99 = (float(v) for v in np.percentile(data, PERCENTILES))
    return Percentiles(count=int(data.size), p50=p50, p90=p90, p99=p99, max=float(data.max()))


def _day(ms: int) -> date:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))).date()


def per_day(
    table: ScoreTable, suspicious: NDArray[np.bool_]
) -> tuple[list[DayCount], float | None]:
    if len(table) == 0:
        return [], None
    days = [_day(ms) for ms in table.event_time_ms]
    first, last = min(days), max(days)
    counts: dict[date, list[int]] = {
        first + timedelta(days=i): [0, 0, 0] for i in range((last - first).days + 1)
    }
    for day, alerted, positive in zip(days, table.alerted, suspicious, strict=True):
        entry = counts[day]
        entry[0] += 1
        entry[1] += int(alerted)
        entry[2] += int(alerted and positive)
    rows = [
        DayCount(day=d, events=e, alerts=a, true_positives=t) for d, (e, a, t) in counts.items()
    ]
    return rows, sum(r.alerts for r in rows) / len(rows)


def per_typology(table: ScoreTable, truth: Sequence[TruthRow]) -> list[TypologyRecall]:
    members: dict[str, list[bool]] = defaultdict(list)
    for row, alerted in zip(truth, table.alerted, strict=True):
        if row.suspicious:
            members[row.typology].append(bool(alerted))
    return [
        TypologyRecall(
            typology=typology, events=len(flags), alerted=sum(flags), recall=sum(flags) / len(flags)
        )
        for typology, flags in sorted(members.items())
    ]


def time_to_detect(table: ScoreTable, truth: Sequence[TruthRow]) -> TimeToDetect:
    """See the module docstring; events are taken in the table's (replay) order."""
    scenarios: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(truth):
        if row.suspicious and row.scenario_id is not None:
            scenarios[row.scenario_id].append(index)
    found: list[ScenarioDetection] = []
    for scenario_id, indexes in sorted(scenarios.items()):
        if len(indexes) < 2:
            continue
        first_alert = next((n for n, i in enumerate(indexes, 1) if table.alerted[i]), None)
        hours = None
        if first_alert is not None:
            start_ms = int(table.event_time_ms[indexes[0]])
            hit_ms = int(table.event_time_ms[indexes[first_alert - 1]])
            hours = (hit_ms - start_ms) / 3_600_000
        found.append(
            ScenarioDetection(
                scenario_id=scenario_id,
                typology=truth[indexes[0]].typology,
                events=len(indexes),
                first_alert_event=first_alert,
                hours_to_detect=hours,
            )
        )
    detected = [s for s in found if s.first_alert_event is not None]
    events_needed = [float(s.first_alert_event or 0) for s in detected]
    by_typology: dict[str, list[ScenarioDetection]] = defaultdict(list)
    for scenario in found:
        by_typology[scenario.typology].append(scenario)
    per_type = {}
    for typology, items in sorted(by_typology.items()):
        needed = [float(s.first_alert_event) for s in items if s.first_alert_event is not None]
        summary = percentiles(needed)
        per_type[typology] = summary.model_copy(update={"count": len(items)})
    return TimeToDetect(
        scenarios=len(found),
        detected=len(detected),
        detection_rate=_ratio(len(detected), len(found)),
        median_events=float(np.median(events_needed)) if events_needed else None,
        mean_events=float(np.mean(events_needed)) if events_needed else None,
        median_hours=(
            float(np.median([s.hours_to_detect or 0.0 for s in detected])) if detected else None
        ),
        per_typology=per_type,
        per_scenario=found,
    )


def latency(
    alerts: Sequence[AlertTiming], scored_latency_ms: Sequence[float] | None = None
) -> dict[str, Percentiles]:
    """Percentiles of the pipeline's steps, from the alerts' own timestamps (and the broker's
    append time of each alert on the run's topic, when known). ``scored_latency_ms`` adds the
    read-to-scored time of every event, alerted or not."""

    def ms(later: datetime, earlier: datetime) -> float:
        return (later - earlier).total_seconds() * 1000

    out = {
        "received_to_scored": percentiles([ms(a.scored_at, a.received_at) for a in alerts]),
        "scored_to_emitted": percentiles([ms(a.emitted_at, a.scored_at) for a in alerts]),
        "received_to_emitted": percentiles([ms(a.emitted_at, a.received_at) for a in alerts]),
    }
    landed = [a for a in alerts if a.landed_at is not None]
    if landed:
        out["emitted_to_landed"] = percentiles(
            [ms(a.landed_at, a.emitted_at) for a in landed if a.landed_at]
        )
        out["received_to_landed"] = percentiles(
            [ms(a.landed_at, a.received_at) for a in landed if a.landed_at]
        )
    if scored_latency_ms is not None:
        out["all_events_received_to_scored"] = percentiles(scored_latency_ms)
    return out


def build_report(
    *,
    run_id: str,
    model_version: str,
    alert_threshold: float,
    truth_source: str,
    table: ScoreTable,
    truth: Mapping[str, TruthRow],
    alerts: Sequence[AlertTiming] = (),
    scored_latency_ms: Sequence[float] | None = None,
) -> BacktestReport:
    """Join the run's scores with the truth and compute every figure."""
    rows = [truth.get(event_id) for event_id in table.event_ids]
    unmatched = sum(row is None for row in rows)
    joined = [row or TruthRow(LEGITIMATE) for row in rows]
    suspicious = np.array([row.suspicious for row in joined], dtype=np.bool_)
    alerted = table.alerted
    true_positives = int((alerted & suspicious).sum())
    alerts_count = int(alerted.sum())
    caught = [
        i for i, row in enumerate(joined) if row.suspicious and alerted[i]
    ]  # typology accuracy counts these
    right = sum(table.predicted[i] == joined[i].typology for i in caught)
    days, mean_per_day = per_day(table, suspicious)
    return BacktestReport(
        run_id=run_id,
        model_version=model_version,
        alert_threshold=alert_threshold,
        truth_source=truth_source,
        events=len(table),
        suspicious=int(suspicious.sum()),
        unmatched=unmatched,
        alerts=alerts_count,
        true_positives=true_positives,
        false_positives=alerts_count - true_positives,
        precision=_ratio(true_positives, alerts_count),
        recall=_ratio(true_positives, int(suspicious.sum())),
        average_precision=average_precision(suspicious, table.scores),
        typology_accuracy=_ratio(right, len(caught)),
        days=len(days),
        alerts_per_day=mean_per_day,
        per_day=days,
        per_typology=per_typology(table, joined),
        time_to_detect=time_to_detect(table, joined),
        latency_ms=latency(alerts, scored_latency_ms),
    )


def suspicious_mask(table: ScoreTable, truth: Mapping[str, TruthRow]) -> NDArray[np.bool_]:
    """Per event of ``table``: suspicious by ``truth`` (unknown events count as legitimate)."""
    return np.array(
        [(row := truth.get(e)) is not None and row.suspicious for e in table.event_ids],
        dtype=np.bool_,
    )


def true_typologies(table: ScoreTable, truth: Mapping[str, TruthRow]) -> list[Typology]:
    return [Typology((truth.get(e) or TruthRow(LEGITIMATE)).typology) for e in table.event_ids]
