"""The report's figures against a hand computation on twelve events (see conftest.py for the
table), through the pure functions and through `riskstream backtest report` on a run
directory; the HTML report and a side-by-side comparison."""

from __future__ import annotations

import base64
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from schemas import LabelEvent, LabelSource, Typology
from stream.backtest.data import load_run, truth_from_file, truth_from_labels
from stream.backtest.report import (
    AlertTiming,
    ScoreTable,
    TruthRow,
    build_report,
    mature_events,
    percentiles,
)
from stream.cli import app

from .conftest import DAY1, DAY2, ROWS, THRESHOLD, write_run

# By hand, from the table in conftest.py:
# suspicious: e02 e04 e05 e06 e07 e10 e12 (7); alerted: e03 e04 e07 e09 e10 (5)
# true positives: e04 e07 e10 (3); false positives: e03 e09 (2)
SUSPICIOUS, ALERTS, TRUE_POSITIVES = 7, 5, 3
PRECISION = Fraction(3, 5)
RECALL = Fraction(3, 7)
# Average precision, scikit-learn's step-wise definition: AP = Σₙ (Rₙ − Rₙ₋₁)·Pₙ over the
# thresholds, highest first. With distinct scores every step adds one event, and recall only
# moves (by 1/7) at a suspicious one, so AP is the mean of the precision at each suspicious
# event's rank. Ranking by score: e07 .90 S, e04 .80 S, e10 .70 S, e09 .60 L, e03 .55 L,
# e12 .45 S, e02 .35 S, e08 .30 L, e05 .20 S, e06 .15 S, e01 .10 L, e11 .05 L: suspicious at
# ranks 1, 2, 3, 6, 7, 9, 10.
AVERAGE_PRECISION = (
    Fraction(1, 1)
    + Fraction(2, 2)
    + Fraction(3, 3)
    + Fraction(4, 6)
    + Fraction(5, 7)
    + Fraction(6, 9)
    + Fraction(7, 10)
) / 7
# Per typology: mule_fan_in_out e02 no, e04 yes, e07 yes -> 2/3; card_testing e05 e06 e12 none
# -> 0/3; structuring e10 yes -> 1/1.
PER_TYPOLOGY = {"card_testing": (3, 0), "mule_fan_in_out": (3, 2), "structuring": (1, 1)}
# Typology named right among caught suspicious events: e04 yes, e07 no (pass_through), e10 yes.
TYPOLOGY_ACCURACY = Fraction(2, 3)
# Time to detect (scenarios with two or more suspicious events): S1 = e02, e04, e07: first
# alert at its 2nd event, 2 hours after e02 (09:00 -> 11:00). S2 = e05, e06, e12: never.
# S3 has one event and L1 is a look-alike (legitimate): neither counts.
# Per day: day 1 has 6 events, alerts e03 e04 (1 true); day 2 has 6 events, alerts e07 e09 e10
# (2 true): 2.5 alerts a day.
# Latency: received->scored of the five alerts is 100, 200, 300, 400, 1000 ms. Linear
# percentiles: p50 is the 3rd value, 300; p90 sits at rank 0.9 * 4 = 3.6, i.e.
# 400 + 0.6 * (1000 - 400) = 760; p99 at rank 3.96: 400 + 0.96 * 600 = 976.


def table_and_truth() -> tuple[ScoreTable, dict[str, TruthRow]]:
    table = ScoreTable(
        event_ids=[r.event_id for r in ROWS],
        event_time_ms=np.array([int(r.time.timestamp() * 1000) for r in ROWS], dtype=np.int64),
        scores=np.array([r.score for r in ROWS]),
        alerted=np.array([r.alerted for r in ROWS]),
        predicted=[r.predicted for r in ROWS],
    )
    truth = {r.event_id: TruthRow(r.truth, r.scenario) for r in ROWS}
    return table, truth


def alert_timings() -> list[AlertTiming]:
    start = DAY1
    return [
        AlertTiming(
            start,
            start + timedelta(milliseconds=ms),
            start + timedelta(milliseconds=ms + 50),
            start + timedelta(milliseconds=ms + 70),
        )
        for ms in (100, 200, 300, 400, 1000)
    ]


def assert_hand_figures(report: dict[str, object]) -> None:
    assert report["events"] == len(ROWS)
    assert report["suspicious"] == SUSPICIOUS
    assert report["alerts"] == ALERTS
    assert report["true_positives"] == TRUE_POSITIVES
    assert report["false_positives"] == ALERTS - TRUE_POSITIVES
    assert report["precision"] == pytest.approx(float(PRECISION))
    assert report["recall"] == pytest.approx(float(RECALL))
    assert report["average_precision"] == pytest.approx(float(AVERAGE_PRECISION))
    assert report["typology_accuracy"] == pytest.approx(float(TYPOLOGY_ACCURACY))
    assert report["days"] == 2
    assert report["alerts_per_day"] == pytest.approx(2.5)
    per_day = report["per_day"]
    assert isinstance(per_day, list)
    assert [(str(d["day"]), d["events"], d["alerts"], d["true_positives"]) for d in per_day] == [
        (DAY1.date().isoformat(), 6, 2, 1),
        (DAY2.date().isoformat(), 6, 3, 2),
    ]
    per_typology = report["per_typology"]
    assert isinstance(per_typology, list)
    assert {t["typology"]: (t["events"], t["alerted"]) for t in per_typology} == PER_TYPOLOGY
    ttd = report["time_to_detect"]
    assert isinstance(ttd, dict)
    assert (ttd["scenarios"], ttd["detected"], ttd["detection_rate"]) == (2, 1, 0.5)
    assert (ttd["median_events"], ttd["median_hours"]) == (2.0, 2.0)
    assert [
        (s["scenario_id"], s["events"], s["first_alert_event"], s["hours_to_detect"])
        for s in ttd["per_scenario"]
    ] == [("S1", 3, 2, 2.0), ("S2", 3, None, None)]


def test_figures_match_the_hand_computation() -> None:
    table, truth = table_and_truth()
    report = build_report(
        run_id="hand",
        model_version="m",
        alert_threshold=THRESHOLD,
        truth_source="hand",
        table=table,
        truth=truth,
        alerts=alert_timings(),
    )
    assert_hand_figures(report.model_dump())
    latency = report.latency_ms["received_to_scored"]
    assert (latency.count, latency.p50, latency.max) == (5, 300.0, 1000.0)
    assert latency.p90 == pytest.approx(760.0)
    assert latency.p99 == pytest.approx(976.0)
    assert report.latency_ms["scored_to_emitted"].p50 == pytest.approx(50.0)
    assert report.latency_ms["emitted_to_landed"].max == pytest.approx(20.0)
    assert report.latency_ms["received_to_landed"].p50 == pytest.approx(370.0)


def test_labels_as_truth_latest_label_wins_and_unlabelled_events_are_legitimate() -> None:
    def label(event_id: str, hours: int, suspicious: bool, scenario: str | None) -> LabelEvent:
        return LabelEvent(
            label_id=f"lb-{event_id}-{hours}",
            event_id=event_id,
            customer_id="cus-1",
            event_time=DAY1,
            label_time=DAY1 + timedelta(hours=hours),
            source=LabelSource.ANALYST,
            is_suspicious=suspicious,
            typology=Typology.STRUCTURING if suspicious else Typology.LEGITIMATE,
            scenario_id=scenario,
        )

    truth = truth_from_labels(
        [
            label("e03", 5, True, "S9"),  # flagged at first...
            label("e03", 9, False, None),  # ...then cleared: the latest label decides
            label("e04", 1, True, "S1"),
            label("e07", 2, True, "S1"),
        ]
    )
    assert truth == {
        "e03": TruthRow("legitimate", None),
        "e04": TruthRow("structuring", "S1"),
        "e07": TruthRow("structuring", "S1"),
    }
    table, _ = table_and_truth()
    report = build_report(
        run_id="labels",
        model_version="m",
        alert_threshold=THRESHOLD,
        truth_source="labels",
        table=table,
        truth=truth,
    )
    # e04 and e07 suspicious, both alerted; unlabelled events count as legitimate
    assert (report.suspicious, report.true_positives, report.alerts) == (2, 2, ALERTS)
    assert report.unmatched == len(ROWS) - 3
    assert report.recall == 1.0
    assert report.average_precision == pytest.approx(1.0)  # e07 and e04 score highest
    # S1 = e04, e07 in replay order: the first is alerted
    assert report.time_to_detect.per_scenario[0].first_alert_event == 1


def test_a_run_without_suspicious_events_reports_no_recall_rather_than_failing() -> None:
    table, truth = table_and_truth()
    legit = {event_id: TruthRow("legitimate") for event_id in truth}
    report = build_report(
        run_id="x",
        model_version="m",
        alert_threshold=THRESHOLD,
        truth_source="t",
        table=table,
        truth=legit,
    )
    assert (report.recall, report.average_precision, report.precision) == (None, None, 0.0)
    assert report.time_to_detect.scenarios == 0
    assert percentiles([]).count == 0


def test_the_report_command_writes_the_hand_figures_and_an_html_report(
    tmp_path: Path, truth_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    folder = write_run(home, "hand-run")
    monkeypatch.setenv("RISKSTREAM_HOME", str(home))
    result = CliRunner().invoke(
        app, ["backtest", "report", "hand-run", "--truth", str(truth_file), "--no-broker"]
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads((folder / "report" / "report.json").read_bytes())
    assert_hand_figures(report)
    assert report["truth_source"] == f"truth {truth_file}"
    # from the run files: received -> scored of the alerts as written, of every event too
    assert report["latency_ms"]["received_to_scored"]["p50"] == pytest.approx(300.0)
    assert report["latency_ms"]["all_events_received_to_scored"]["count"] == len(ROWS)
    assert "precision 0.6000" in result.output
    html = (folder / "report" / "report.html").read_text()
    pngs = [base64.b64decode(c.split('"', 1)[0]) for c in html.split("base64,")[1:]]
    assert len(pngs) == 4  # PR curve, score histograms, alerts over time, per-typology recall
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    for title in ("Precision-recall", "Score histograms", "Alerts over time", "Recall per"):
        assert title in html
    assert "<script" not in html  # self-contained and static
    # counts read as whole numbers and milliseconds to a tenth, not as 4-decimal shares
    assert "<td>median events to detect</td><td>2</td>" in html
    assert "<td>received to scored</td><td>5</td><td>300</td>" in html
    assert "<td>scored to emitted</td><td>5</td><td>50.0</td>" in html
    assert "<td>S1</td><td>mule_fan_in_out</td><td>3</td><td>2</td><td>2.00</td>" in html
    assert "2.0000" not in html
    assert "300.0000" not in html


def test_two_runs_side_by_side(
    tmp_path: Path, truth_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    write_run(home, "model-a")
    # model B: e12 and e02 now alerted (recall 5/7), e03 no longer (one false positive less)
    scores = [r.score for r in ROWS]
    scores[11], scores[1], scores[2] = 0.65, 0.52, 0.40
    folder_b = write_run(home, "model-b", scores)
    monkeypatch.setenv("RISKSTREAM_HOME", str(home))
    result = CliRunner().invoke(
        app,
        ["backtest", "report", "model-a", "--compare", "model-b", "--truth", str(truth_file),
         "--no-broker"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    comparison = orjson.loads(
        (home / "runs" / "model-a" / "report" / "compare-model-b.json").read_bytes()
    )
    assert comparison["overlap"] == {"both": 12, "only_first": 0, "only_second": 0}
    a, b = comparison["runs"]
    assert (a["run_id"], b["run_id"]) == ("model-a", "model-b")
    assert a["recall"] == pytest.approx(3 / 7)
    # B alerts e04 e07 e09 e10 e12 e02: 5 of 6 suspicious-true
    assert (b["alerts"], b["true_positives"]) == (6, 5)
    assert b["recall"] == pytest.approx(5 / 7)
    assert b["precision"] == pytest.approx(5 / 6)
    # S1 now caught at its first event (e02), S2 at its third (e12)
    assert [s["first_alert_event"] for s in b["time_to_detect"]["per_scenario"]] == [1, 3]
    html = (home / "runs" / "model-a" / "report" / "compare-model-b.html").read_text()
    assert "model-a" in html
    assert "model-b" in html
    assert html.count("data:image/png;base64,") == 3
    assert (folder_b / "report" / "report.json").is_file()  # each run's own report too


def test_load_run_reads_scores_in_replay_order(tmp_path: Path, truth_file: Path) -> None:
    folder = write_run(tmp_path, "order")
    data = load_run(tmp_path, "order")
    assert data.directory == folder
    assert data.table.event_ids == [r.event_id for r in ROWS]
    assert data.table.alerted.tolist() == [r.alerted for r in ROWS]
    assert len(data.alerts) == ALERTS
    assert truth_from_file(truth_file)["e02"] == TruthRow("mule_fan_in_out", "S1")


def test_backtest_list_as_json_lists_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    write_run(home, "run-a")
    write_run(home, "run-b")
    monkeypatch.setenv("RISKSTREAM_HOME", str(home))
    result = CliRunner().invoke(app, ["backtest", "list", "--json"])
    assert result.exit_code == 0, result.output
    runs = orjson.loads(result.output)
    assert sorted(r["run_id"] for r in runs) == ["run-a", "run-b"]
    assert {r["model_version"] for r in runs} == {"model-of-run-a", "model-of-run-b"}
    assert all(r["status"] == "completed" for r in runs)


def test_labels_resolve_by_source_rank_and_young_events_can_be_left_out() -> None:
    def label(event_id: str, hours: int, source: LabelSource, suspicious: bool) -> LabelEvent:
        return LabelEvent(
            label_id=f"lb-{event_id}-{hours}",
            event_id=event_id,
            customer_id="cus-1",
            event_time=DAY1,
            label_time=DAY1 + timedelta(hours=hours),
            source=source,
            is_suspicious=suspicious,
            typology=Typology.STOLEN_CARD if suspicious else Typology.LEGITIMATE,
        )

    # a chargeback outranks a later analyst's "false positive", as in training
    truth = truth_from_labels(
        [
            label("e01", 30, LabelSource.CHARGEBACK, True),
            label("e01", 40, LabelSource.ANALYST, False),
        ]
    )
    assert truth == {"e01": TruthRow("stolen_card", None)}

    table, _ = table_and_truth()
    newest = int(table.event_time_ms.max())
    # a maturity of one hour at the newest event: the events of the last hour are left out
    kept, young = mature_events(table, None, 1 / 24)
    assert young == int((table.event_time_ms > newest - 3_600_000).sum())
    assert young > 0
    assert kept.event_ids == [
        e
        for e, t in zip(table.event_ids, table.event_time_ms, strict=True)
        if t <= newest - 3_600_000
    ]
    # a label known a day after the last event moves the clock: nothing is young any more
    assert mature_events(table, newest + 86_400_000, 1.0)[1] == 0
