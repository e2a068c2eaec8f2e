"""docs/your-data.md's worked example stays true: its export script writes what its mapping
imports, with the rejects the page shows."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from schemas import LabelEvent, TransactionEvent, decode
from stream.ingest.importer import run_import
from stream.simulate.config import build_config
from stream.simulate.engine import simulate
from stream.simulate.writers import write_files

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "card-payments"


def export_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_export", EXAMPLE / "make_export.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_exports_import_with_the_example_mapping(tmp_path: Path) -> None:
    # a small bank over the autumn clock change (1 November 2026 in New York)
    config = build_config(customers=60, days=60, seed=5, start_date="2026-09-15", prevalence=0.01)
    write_files(simulate(config), tmp_path / "sim", progress=False)
    payments, _ = export_script().export(tmp_path / "sim", tmp_path / "bank")
    assert payments > 1000
    summary = run_import(
        tmp_path / "bank" / "payments.csv",
        EXAMPLE / "mapping.toml",
        tmp_path / "imported",
        labels_path=tmp_path / "bank" / "chargebacks.csv",
        progress=False,
    )
    assert summary.rejected["label"]["unknown_event"] == 1  # a payment outside the export
    assert summary.rejected["label"]["label_before_event"] == 1  # keyed in before its payment
    # the only events refused are the wall-clock times the clock change makes ambiguous
    assert set(summary.rejected["event"]) == {"ambiguous_local_time"}
    assert summary.events_written + summary.rejected["event"]["ambiguous_local_time"] == payments
    assert summary.suspicious_labels > 0
    assert summary.labels_written > summary.suspicious_labels  # reversed disputes: legitimate
    events = {
        decode(TransactionEvent, line).event_id
        for line in (tmp_path / "imported" / "events.jsonl").read_bytes().splitlines()
    }
    labels = [
        decode(LabelEvent, line)
        for line in (tmp_path / "imported" / "labels.jsonl").read_bytes().splitlines()
    ]
    assert all(label.event_id in events for label in labels)
    assert {label.source.value for label in labels} == {"chargeback"}
