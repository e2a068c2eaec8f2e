"""`riskstream data import` through its command line, on the hand-written exports: what is
written, what is refused and why, and the one-line errors that stop an import."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from schemas import LabelEvent, TransactionEvent, decode, encode
from stream.ingest import readers
from stream.ingest.importer import run_import

from .conftest import CARD_HEADER, CARD_ROWS, invoke


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line]


def rejects(out: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in lines(out / "rejects.jsonl")]


def test_card_csv_every_row_written_or_refused_with_its_reason(
    card_export: tuple[Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    csv, mapping = card_export
    out = tmp_path / "out"
    result = invoke(cli, str(csv), "--mapping", str(mapping), "--out", str(out))
    assert result.exit_code == 1  # rows were refused and --max-reject-rate is 0 by default
    assert "error: 73.33% of the rows were rejected" in result.output
    assert "Traceback" not in result.output

    events = [decode(TransactionEvent, line) for line in lines(out / "events.jsonl")]
    # in event-time order; local Paris times in UTC; euros with a decimal comma in cents
    assert [(e.event_id, e.event_time.isoformat(), e.amount_minor) for e in events] == [
        ("card-T0002", "2026-01-01T07:00:00+00:00", 6000),
        ("card-T0001", "2026-01-01T22:30:00+00:00", 9999),
        ("card-T0003", "2026-01-02T08:15:00+00:00", 1250),
        ("card-T0014", "2026-01-07T11:00:00+00:00", 310),
    ]
    assert [e.channel.value for e in events] == ["atm", "ecommerce", "card", "card"]
    assert [e.counterparty_type.value for e in events] == [
        "atm",
        "merchant",
        "merchant",
        "merchant",
    ]
    assert events[1].country == "DE"
    assert events[1].terminal_id is None
    # each line is exactly what the wire format's encoder makes of it
    assert [encode(e) for e in events] == lines(out / "events.jsonl")

    (label,) = [decode(LabelEvent, line) for line in lines(out / "labels.jsonl")]
    assert (label.event_id, label.customer_id, label.counterparty_id) == (
        "card-T0001",
        "cust-1001",
        "m-M-12",
    )
    assert label.label_time.isoformat() == "2026-01-20T22:59:59.999000+00:00"  # day end, Paris
    assert (label.is_suspicious, label.typology.value, label.source.value) == (
        True,
        "stolen_card",
        "chargeback",
    )

    refused = {(r["row"], r["kind"], r["reason"]) for r in rejects(out)}
    assert refused == {
        (4, "event", "bad_timestamp"),
        (5, "event", "unmapped_value"),
        (6, "event", "bad_amount"),
        (7, "event", "duplicate_event_id"),
        (8, "event", "ambiguous_local_time"),
        (9, "event", "invalid_event"),
        (10, "label", "label_before_event"),
        (11, "event", "missing_value"),
        (12, "label", "missing_value"),
        (13, "label", "unmapped_value"),
        (14, "event", "invalid_event"),
    }
    details = {r["row"]: r["detail"] for r in rejects(out)}
    assert details[6] == "amount: '5,005' has more decimal places than EUR's 2"
    assert details[7] == "event_id 'card-T0001' was imported from row 2"
    assert details[9] == "field 'mcc': String should match pattern '^[0-9]{4}$'"
    assert details[10].startswith("label_time 2026-01-01T22:59:59.999Z is before its event's")
    assert details[14].startswith("field 'country': ")
    # the printed counts are the file's counts
    for (kind, reason), count in Counter((r["kind"], r["reason"]) for r in rejects(out)).items():
        assert any(
            line.split() == [kind, reason, str(count)] for line in result.output.splitlines()
        ), (kind, reason)
    assert len(CARD_ROWS) == len(events) + len(refused)  # nothing silently dropped
    summary = orjson.loads((out / "import.json").read_bytes())
    assert summary["events_written"] == 4
    assert summary["rejected_rows"] == 11


def test_wires_parquet_with_a_separate_cases_table(
    wires_export: tuple[Path, Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    wires, cases, mapping = wires_export
    out = tmp_path / "out"
    result = invoke(
        cli, str(wires), "--labels", str(cases), "--mapping", str(mapping), "--out", str(out),
        "--max-reject-rate", "0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    events = {
        e.event_id: e
        for e in map(lambda b: decode(TransactionEvent, b), lines(out / "events.jsonl"))
    }
    assert sorted(events) == [f"wire-W00{n}" for n in range(1, 8)]
    assert events["wire-W004"].direction.value == "inbound"
    assert events["wire-W003"].amount_minor == 499_900
    assert events["wire-W001"].customer_id == "cif-501"
    assert events["wire-W002"].memo is None
    labels = [decode(LabelEvent, line) for line in lines(out / "labels.jsonl")]
    assert [(lb.label_id, lb.event_id, lb.typology.value) for lb in labels] == [
        ("case-6", "wire-W005", "structuring"),
        ("case-2", "wire-W002", "legitimate"),
        ("case-1", "wire-W001", "mule_fan_in_out"),
        ("case-10", "wire-W001", "legitimate"),
    ]  # in label-time order
    assert all(lb.source.value == "confirmed_case" for lb in labels)
    refused = {(r["input"], r["row"], r["kind"], r["reason"]) for r in rejects(out)}
    assert refused == {
        ("wires.parquet", 8, "event", "invalid_event"),
        ("cases.parquet", 3, "label", "unknown_event"),
        ("cases.parquet", 4, "label", "label_before_event"),
        ("cases.parquet", 7, "label", "duplicate_label_id"),
        ("cases.parquet", 8, "label", "invalid_label"),
        ("cases.parquet", 9, "label", "event_rejected"),
        ("cases.parquet", 11, "label", "unmapped_value"),
    }
    details = {(r["input"], r["row"]): r["detail"] for r in rejects(out)}
    assert details[("cases.parquet", 3)] == "no imported event has id 'wire-W999'"
    assert details[("cases.parquet", 9)].startswith(
        "its event 'wire-W008' (events row 8) was rejected: invalid_event"
    )
    assert "1 label rows say no label" in " ".join(result.output.split())


def test_jsonl_input_and_malformed_lines(cli: CliRunner, tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        "[events]\n"
        'event_id = "id"\nevent_time = "ts"\ncustomer_id = "cust"\naccount_id = "cust"\n'
        'channel = { value = "p2p" }\ndirection = { value = "outbound" }\n'
        'amount = { column = "amount", unit = "major" }\ncurrency = { value = "USD" }\n'
        'counterparty_id = "to"\ncounterparty_type = { value = "account" }\n'
        'country = { value = "US" }\n'
    )
    path = tmp_path / "transfers.jsonl"
    path.write_text(
        '{"id": "t1", "ts": "2026-05-01T10:00:00-04:00", "cust": 77, "to": "a9", "amount": 12.3}\n'
        "not json\n"
        "\n"
        '{"id": "t2", "ts": "2026-05-01T09:00:00Z", "cust": "77", "to": {"x": 1}, "amount": 1}\n'
        '{"id": "t3", "ts": "2026-05-01T09:30:00Z", "cust": "78", "to": "a1", "amount": "0.10"}\n'
    )
    out = tmp_path / "out"
    result = invoke(cli, str(path), "--mapping", str(mapping), "--out", str(out),
                    "--max-reject-rate", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    events = [decode(TransactionEvent, line) for line in lines(out / "events.jsonl")]
    assert [(e.event_id, e.customer_id, e.amount_minor) for e in events] == [
        ("t3", "78", 10),
        ("t1", "77", 1230),
    ]
    assert {(r["row"], r["reason"]) for r in rejects(out)} == {
        (2, "malformed_row"),
        (4, "malformed_row"),
    }
    assert "rejected 2 of 4 rows" in result.output  # the blank line is not a row


def test_external_sort_gives_the_same_files_as_an_in_memory_sort(
    wires_export: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BATCH_ROWS", 25)  # 13 batches: duplicates across batches
    # many runs: the wires table repeated with fresh ids, out of time order
    wires, cases, mapping = wires_export
    table = pq.read_table(wires)
    copies = [
        table.set_column(0, "WireRef", pa.array([f"{r}-{n}" for r in table["WireRef"].to_pylist()]))
        for n in range(40)
    ]
    big = tmp_path / "big.parquet"
    pq.write_table(pa.concat_tables(copies[::-1]), big)
    first = run_import(big, mapping, tmp_path / "a", labels_path=cases, run_rows=7, progress=False)
    second = run_import(big, mapping, tmp_path / "b", labels_path=cases, progress=False)
    assert first.sort_runs > 30
    assert second.sort_runs == 0
    for name in ("events.jsonl", "labels.jsonl", "rejects.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


# -- errors that stop an import: one line each, no traceback ------------------------------


def one_line_error(result: object, expected: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert expected in errors[0], output


def test_a_missing_mapped_column(
    card_export: tuple[Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    csv, mapping = card_export
    mapping.write_text(mapping.read_text().replace('"MCC"', '"MerchantCategory"'))
    result = invoke(cli, str(csv), "--mapping", str(mapping), "--out", str(tmp_path / "o"))
    one_line_error(result, "payments.csv has no column 'MerchantCategory' named in the mapping")
    assert not (tmp_path / "o" / "events.jsonl").exists()


def test_an_unparseable_mapping(
    card_export: tuple[Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    csv, mapping = card_export
    mapping.write_text(mapping.read_text().replace("[events]", "[events"))
    result = invoke(cli, str(csv), "--mapping", str(mapping), "--out", str(tmp_path / "o"))
    one_line_error(result, "card.toml is not valid TOML: ")


def test_an_empty_input(card_export: tuple[Path, Path], cli: CliRunner, tmp_path: Path) -> None:
    csv, mapping = card_export
    csv.write_text(CARD_HEADER + "\n")
    result = invoke(cli, str(csv), "--mapping", str(mapping), "--out", str(tmp_path / "o"))
    one_line_error(result, "payments.csv holds no data rows")
    csv.write_text("")
    result = invoke(cli, str(csv), "--mapping", str(mapping), "--out", str(tmp_path / "o"))
    one_line_error(result, "payments.csv is empty")


def test_labels_for_unknown_events_and_labels_before_their_event(
    wires_export: tuple[Path, Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    wires, cases, mapping = wires_export
    table = pq.read_table(cases)
    for row, reason, detail in (
        (2, "unknown_event", "no imported event has id 'wire-W999'"),
        (3, "label_before_event", "label_time 2026-03-09T23:59:59.999Z is before its event's"),
    ):
        only = tmp_path / f"{reason}.parquet"
        pq.write_table(table.slice(row, 1), only)
        out = tmp_path / reason
        result = invoke(cli, str(wires), "--labels", str(only), "--mapping", str(mapping),
                        "--out", str(out))  # fmt: skip
        one_line_error(result, "of the rows were rejected, more than --max-reject-rate 0")
        assert any(line.split()[:2] == ["label", reason] for line in result.output.splitlines())
        (refused,) = [r for r in rejects(out) if r["kind"] == "label"]
        assert refused["row"] == 1
        assert str(refused["detail"]).startswith(detail)


def test_a_malformed_csv_record_and_mode_mismatches(
    card_export: tuple[Path, Path],
    wires_export: tuple[Path, Path, Path],
    cli: CliRunner,
    tmp_path: Path,
) -> None:
    csv, mapping = card_export
    csv.write_text("\n".join([CARD_HEADER, CARD_ROWS[0], "T9;1;2"]) + "\n")
    result = invoke(cli, str(csv), "--mapping", str(mapping), "--out", str(tmp_path / "o"))
    one_line_error(result, "payments.csv line 3: 3 fields where the header has 13")
    wires, cases, wires_mapping = wires_export
    result = invoke(cli, str(wires), "--mapping", str(wires_mapping), "--out", str(tmp_path / "w"))
    one_line_error(result, "give it with --labels")
    result = invoke(cli, str(csv), "--labels", str(cases), "--mapping", str(mapping),
                    "--out", str(tmp_path / "c"))  # fmt: skip
    one_line_error(
        result, '--labels was given, but card.toml has no [labels] table with from = "file"'
    )


def test_outputs_are_not_replaced_unless_forced(
    card_export: tuple[Path, Path], cli: CliRunner, tmp_path: Path
) -> None:
    csv, mapping = card_export
    out = tmp_path / "out"
    args = [str(csv), "--mapping", str(mapping), "--out", str(out), "--max-reject-rate", "1"]
    assert invoke(cli, *args).exit_code == 0
    (out / "narratives").mkdir()  # a dataset built from it
    one_line_error(invoke(cli, *args), "already holds events.jsonl")
    assert invoke(cli, *args, "--force").exit_code == 0
    assert not (out / "narratives").exists()  # stale: removed with the import it came from
    (out / "truth.jsonl").write_text("")
    one_line_error(invoke(cli, *args, "--force"), "holds a simulator truth file")
