"""Import speed and memory: `riskstream data import` of a 1,000,000-row card-payments CSV.

    .venv/bin/python -m bench.bench_import --json bench/results/import.json
    .venv/bin/python -m bench.bench_import --rows 200000 --repeat 1     # quicker

Targets: at least 50,000 rows/s and a peak RSS under 1 GB for 1,000,000 rows.

The files are generated here, deterministically (numpy, fixed seed), in the shape of the
worked example's bank exports (docs/your-data.md) and imported with its mapping,
docs/examples/card-payments/mapping.toml: payments.csv with New York wall-clock times as
``09/15/2026 01:04:19 PM``, dollar amounts, entry-mode codes to map, rows out of time order
(so the sort has work to do) and 0.1 % of rows with a defect that must be rejected; and
chargebacks.csv with a chargeback for 0.5 % of the payments, joined on the payment's id.

Each import runs in a child process that reports its wall time, its CPU time (machines here
are shared: rows per CPU-second is the figure other jobs disturb least) and its peak resident
set (VmHWM), so the generator's memory is not counted. The reference, in the same run and the
same kind of child, is pyarrow's streaming CSV reader alone reading the payments with the same
options (every column as text, one thread): the read the import starts from. Import and
reference alternate ``--repeat`` times; best and median are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from bench.machine import machine

MAPPING = Path(__file__).resolve().parent.parent / "docs/examples/card-payments/mapping.toml"
COLUMNS = (
    "TxnRef",
    "TxnDateTime",
    "ClientNo",
    "CardToken",
    "EntryMode",
    "Amount",
    "Ccy",
    "MerchantId",
    "MerchantCountry",
    "MCC",
    "TerminalId",
    "DeviceHash",
)


def _new_york(utc_seconds: np.ndarray, pattern: str) -> pa.Array:
    """UTC instants as New York wall-clock text (never a time a DST change skips)."""
    utc = pa.array(utc_seconds.astype("datetime64[s]")).cast(pa.timestamp("s", tz="UTC"))
    local = pc.local_timestamp(utc.cast(pa.timestamp("s", tz="America/New_York")))
    return pc.strftime(local, format=pattern)


def generate_exports(folder: Path, rows: int, seed: int = 7) -> tuple[Path, Path]:
    """payments.csv of ``rows`` rows and chargebacks.csv (see the module docstring)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-05T00:00:00")
    # 90 days of payments, shuffled within 6-hour blocks: the file is out of time order
    seconds = np.sort(rng.integers(0, 90 * 86_400, rows))
    order = np.lexsort((rng.random(rows), seconds // (6 * 3600)))
    stamps = start + seconds[order].astype("timedelta64[s]")
    clients = rng.integers(1, max(2, rows // 40), rows)
    modes = np.array(["CHIP", "CTLS", "ECOM", "ATM"])[rng.choice(4, rows, p=[0.45, 0.3, 0.2, 0.05])]
    dollars = rng.lognormal(3.0, 1.0, rows).round(2) + 0.01
    merchants = rng.integers(1, 20_000, rows)
    refs = np.char.add("P", np.char.zfill(np.arange(1, rows + 1).astype(str), 9))
    columns = {
        "TxnRef": refs,
        "TxnDateTime": _new_york(stamps, "%m/%d/%Y %I:%M:%S %p").to_numpy(zero_copy_only=False),
        "ClientNo": clients.astype(str),
        "CardToken": np.char.add("tok", clients.astype(str)),
        "EntryMode": modes,
        "Amount": np.char.mod("%.2f", dollars),
        "Ccy": np.full(rows, "USD"),
        "MerchantId": np.char.add("M", merchants.astype(str)),
        "MerchantCountry": np.array(["us", "us", "us", "ca", "mx", "gb"])[rng.integers(0, 6, rows)],
        "MCC": np.where(
            modes == "ATM",
            "6011",
            np.array(["5411", "5812", "5732", "4111", "5999"])[rng.integers(0, 5, rows)],
        ),
        "TerminalId": np.where(
            modes == "ECOM", "", np.char.add("T", (merchants % 5000).astype(str))
        ),
        "DeviceHash": np.where(modes == "ECOM", np.char.add("d", clients.astype(str)), ""),
    }
    # 0.1 % defects, one kind per row: an amount in tenths of a cent, an unknown entry mode,
    # a date that does not exist
    defects = rng.choice(rows, size=rows // 1000, replace=False)
    for n, row in enumerate(defects):
        column, value = [
            ("Amount", "12.345"),
            ("EntryMode", "SWIPE"),
            ("TxnDateTime", "02/30/2026 10:00:00 AM"),
        ][n % 3]
        columns[column][row] = value
    payments = folder / "payments.csv"
    pcsv.write_csv(
        pa.table({name: pa.array(columns[name], type=pa.string()) for name in COLUMNS}),
        payments,
        write_options=pcsv.WriteOptions(quoting_style="none"),
    )
    charged = np.sort(rng.choice(rows, size=rows // 200, replace=False))
    fraud = rng.random(len(charged)) < 0.9
    received = stamps[charged] + rng.integers(3, 60, len(charged)).astype("timedelta64[D]")
    types = np.array(["CARD_TESTING", "ACCOUNT_TAKEOVER", "LOST_STOLEN", "SKIMMING"])
    chargebacks = folder / "chargebacks.csv"
    pcsv.write_csv(
        pa.table(
            {
                "CbRef": np.char.add("CB", np.arange(len(charged)).astype(str)),
                "OrigTxnRef": refs[charged],
                "ReceivedOn": _new_york(received, "%Y-%m-%d"),
                "Outcome": np.where(fraud, "FRAUD", "REVERSED"),
                "FraudType": np.where(fraud, types[rng.integers(0, 4, len(charged))], ""),
            }
        ),
        chargebacks,
        write_options=pcsv.WriteOptions(quoting_style="none"),
    )
    return payments, chargebacks


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that over
    ``fork`` and ``exec``, so a child would report its parent's peak (the generator's)."""
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_import(payments: Path, chargebacks: Path, out: Path) -> dict[str, Any]:
    from stream.ingest.importer import run_import

    started, cpu = time.perf_counter(), time.process_time()
    summary = run_import(
        payments, MAPPING, out, labels_path=chargebacks, overwrite=True, progress=False
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "rows": summary.input_rows,
        "events_written": summary.events_written,
        "labels_written": summary.labels_written,
        "rejected": summary.rejected_rows,
        "sort_runs": summary.sort_runs,
        "peak_rss_mib": peak_rss_mib(),
    }


def child_reference(csv: Path) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    rows = 0
    reader = pcsv.open_csv(
        csv,
        read_options=pcsv.ReadOptions(use_threads=False, block_size=4 << 20),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(COLUMNS, pa.string()), strings_can_be_null=True
        ),
    )
    for batch in reader:
        rows += batch.num_rows
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "rows": rows,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_child(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_import", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def summary(values: list[float], digits: int = 0) -> dict[str, float]:
    return {"best": round(max(values), digits), "median": round(statistics.median(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--child-import", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-reference", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_import:
        print(json.dumps(child_import(*args.child_import)))
        return
    if args.child_reference:
        print(json.dumps(child_reference(args.child_reference)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        csv, chargebacks = generate_exports(work, args.rows)
        print(f"generated {args.rows:,} rows ({csv.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - started:.1f}s", file=sys.stderr)  # fmt: skip
        imports, references = [], []
        for attempt in range(args.repeat):
            imports.append(
                run_child("--child-import", str(csv), str(chargebacks), str(work / "out"))
            )
            references.append(run_child("--child-reference", str(csv)))
            print(f"run {attempt + 1}: import {imports[-1]}, reference {references[-1]}",
                  file=sys.stderr)  # fmt: skip
        file_mib = csv.stat().st_size / 2**20
    rates = [run["rows"] / run["seconds"] for run in imports]
    cpu_rates = [run["rows"] / run["cpu_seconds"] for run in imports]
    reference_rates = [run["rows"] / run["seconds"] for run in references]
    reference_cpu = [run["rows"] / run["cpu_seconds"] for run in references]
    last = imports[-1]
    results = {
        "benchmark": "bench_import",
        "command": "python -m bench.bench_import " + " ".join(sys.argv[1:]),
        "machine": machine(pyarrow=pa.__version__),
        "rows": args.rows,
        "input_rows": last["rows"],
        "csv_mib": round(file_mib, 1),
        "repeats": args.repeat,
        "events_written": last["events_written"],
        "labels_written": last["labels_written"],
        "rejected": last["rejected"],
        "sort_runs": last["sort_runs"],
        "import_rows_per_s": summary(rates),
        "import_rows_per_cpu_s": summary(cpu_rates),
        "import_seconds_best": round(min(run["seconds"] for run in imports), 2),
        "import_peak_rss_mib": round(max(run["peak_rss_mib"] for run in imports), 1),
        "reference_pyarrow_read_rows_per_s": summary(reference_rates),
        "reference_rows_per_cpu_s": summary(reference_cpu),
        "reference_peak_rss_mib": round(max(run["peak_rss_mib"] for run in references), 1),
        "ratio_to_reference_best": round(max(rates) / max(reference_rates), 4),
        "ratio_to_reference_cpu_best": round(max(cpu_rates) / max(reference_cpu), 4),
        "targets": {"rows_per_s": 50_000, "peak_rss_mib": 1024},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
