"""What `riskstream simulate` writes: valid, ordered, reproducible, and self-consistent."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from schemas import LabelEvent, LabelSource, TransactionEvent, Typology, decode, encode
from stream.cli import app
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import CARD_FRAUD, REPORTED_FRAUD, simulate
from stream.simulate.truth import read_truth
from stream.simulate.writers import write_files
from tests.simulate.conftest import SMALL, Run, read_jsonl

FILES = (
    "events.jsonl",
    "events.parquet",
    "labels.jsonl",
    "labels.parquet",
    "truth.jsonl",
    "truth.parquet",
    "manifest.json",
)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(
    small_run: Run, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    write_files(simulate(SMALL), again, fmt="both", progress=False)
    for name in FILES:
        assert (again / name).read_bytes() == (small_run.out / name).read_bytes(), name

    other = tmp_path / "other"
    write_files(simulate(SMALL.model_copy(update={"seed": 12})), other, progress=False)
    assert (other / "events.jsonl").read_bytes() != (small_run.out / "events.jsonl").read_bytes()


def test_every_event_decodes_and_re_encodes_to_the_same_bytes(small_run: Run) -> None:
    lines = (small_run.out / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == len(small_run.events) > 10_000
    for line in lines:
        assert encode(decode(TransactionEvent, line)) == line


def test_every_label_decodes_and_truth_rows_validate(small_run: Run) -> None:
    for line in (small_run.out / "labels.jsonl").read_bytes().splitlines():
        assert encode(decode(LabelEvent, line)) == line
    truth = read_truth(small_run.out / "truth.jsonl")
    assert len(truth) == len(small_run.events)
    assert truth == read_truth(small_run.out / "truth.parquet")


def test_events_are_in_event_time_order_with_unique_ids(small_run: Run) -> None:
    times = [e["event_time"] for e in small_run.events]
    assert times == sorted(times)
    ids = [e["event_id"] for e in small_run.events]
    assert len(set(ids)) == len(ids)
    assert [t["event_id"] for t in small_run.truth] == ids  # truth rows align with events


def test_the_wire_event_carries_no_answer(small_run: Run) -> None:
    suspicious = {t["event_id"] for t in small_run.truth if t["is_suspicious"]}
    for event in small_run.events:
        assert "typology" not in event
        assert "scenario_id" not in event
        if event["event_id"] in suspicious:
            # ids of accounts and devices made for a scenario look like any other
            assert not any(word in str(event).lower() for word in ("mule", "fraud", "launder"))


def test_labels_cover_exactly_the_suspicious_events_with_the_right_source_and_delay(
    small_run: Run,
) -> None:
    truth = {t["event_id"]: t for t in small_run.truth}
    suspicious = {i for i, t in truth.items() if t["is_suspicious"]}
    labelled = Counter(label["event_id"] for label in small_run.labels)
    assert set(labelled) == suspicious
    assert set(labelled.values()) == {1}

    config = small_run.sim.config
    last_event: dict[tuple[str, str], datetime] = defaultdict(
        lambda: datetime.min.replace(tzinfo=UTC)
    )
    for t in truth.values():
        if t["is_suspicious"]:
            key = (t["scenario_id"], t["customer_id"])
            last_event[key] = max(last_event[key], _parse(t["event_time"]))
    label_times = [label["label_time"] for label in small_run.labels]
    assert label_times == sorted(label_times)
    chargeback_days: list[float] = []
    for label in small_run.labels:
        t = truth[label["event_id"]]
        assert label["typology"] == t["typology"]
        assert label["scenario_id"] == t["scenario_id"]
        typology = Typology(label["typology"])
        card = typology in CARD_FRAUD | REPORTED_FRAUD
        expected = (
            LabelSource.CHARGEBACK
            if typology in CARD_FRAUD
            else LabelSource.FRAUD_REPORT
            if typology in REPORTED_FRAUD
            else LabelSource.CONFIRMED_CASE
        )
        assert label["source"] == expected.value
        delay = _parse(label["label_time"]) - last_event[(t["scenario_id"], t["customer_id"])]
        if card:
            assert delay > timedelta(0)
            chargeback_days.append(delay / timedelta(days=1))
        else:
            low, high = config.case_delay_days
            assert timedelta(days=low) <= delay <= timedelta(days=high)
    # chargebacks: log-normal between the configured 5th and 95th percentiles (one delay per
    # victim and scenario, so the labels of one victim share it)
    low, high = config.chargeback_delay_days
    inside = [low <= d <= high for d in chargeback_days]
    assert len(chargeback_days) > 20
    assert sum(inside) / len(inside) >= 0.7
    assert low < statistics.median(chargeback_days) < high


def test_transfers_between_customers_appear_on_both_sides(small_run: Run) -> None:
    frame = small_run.sim.events
    sides: dict[int, list[int]] = defaultdict(list)
    for row, link in enumerate(frame["link"].tolist()):
        if link >= 0:
            sides[link].append(row)
    assert len(sides) > 100
    for rows in sides.values():
        assert len(rows) == 2
        out, inn = sorted(rows, key=lambda r: small_run.events[r]["direction"] != "outbound")
        sent, got = small_run.events[out], small_run.events[inn]
        assert (sent["direction"], got["direction"]) == ("outbound", "inbound")
        assert sent["amount_minor"] == got["amount_minor"]
        assert sent["counterparty_id"] == got["account_id"]
        assert got["counterparty_id"] == sent["account_id"]
        assert got["event_time"] >= sent["event_time"]


def test_manifest_hashes_and_counts_match_the_files(small_run: Run) -> None:
    manifest = small_run.manifest
    for name, entry in manifest["files"].items():
        data = (small_run.out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["bytes"] == len(data)
    counts = manifest["counts"]
    assert counts["events"] == len(small_run.events)
    assert counts["labels"] == len(small_run.labels)
    by_truth = Counter(t["typology"] for t in small_run.truth)
    assert counts["events_by_typology"] == {t.value: by_truth.get(t.value, 0) for t in Typology}
    assert manifest["config"] == SMALL.model_dump(mode="json")


def test_parquet_holds_the_same_rows_as_jsonl(small_run: Run) -> None:
    events = pq.read_table(small_run.out / "events.parquet").to_pylist()
    assert len(events) == len(small_run.events)
    for parquet_row, json_row in zip(events[::97], small_run.events[::97], strict=True):
        assert parquet_row["event_time"] == _parse(json_row["event_time"])
        for key, value in json_row.items():
            if key != "event_time":
                assert parquet_row[key] == value, key
    labels = pq.read_table(small_run.out / "labels.parquet").to_pylist()
    assert [row["label_id"] for row in labels] == [row["label_id"] for row in small_run.labels]


def test_cli_writes_a_run_and_rejects_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["simulate", "--customers", "60", "--days", "4", "--seed", "3", "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "run" / "events.jsonl")) > 100
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert again.exit_code == 1
    assert "--overwrite" in again.output
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--mix", "phishing=1"])
    assert bad.exit_code == 2
    assert "unknown typology" in bad.output
    assert runner.invoke(app, args).exit_code == 2  # neither --out nor --kafka


def test_empty_prevalence_still_writes_valid_files(tmp_path: Path) -> None:
    config = SimulationConfig(customers=60, days=3, prevalence=0.0)
    manifest = write_files(simulate(config), tmp_path, fmt="both", progress=False)
    assert manifest["counts"]["suspicious_events"] == 0
    assert manifest["files"]["labels.jsonl"]["rows"] == 0
    assert pq.read_table(tmp_path / "labels.parquet").num_rows == 0
