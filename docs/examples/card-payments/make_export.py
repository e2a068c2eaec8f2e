"""Make the worked example's "bank exports": payments.csv and chargebacks.csv.

    .venv/bin/python docs/examples/card-payments/make_export.py --out bank

A real bank would start from its own files; this script makes a pair that looks like a US
card issuer's, from a simulated bank (``riskstream simulate``, fixed seed): the card,
e-commerce and ATM payments, written with the issuer's column names, New York wall-clock
times and dollar amounts, and the chargebacks it received - fraud with its fraud type, a few
disputes that were reversed (legitimate after all), one chargeback for a payment outside the
export and one keyed in with a date before its payment. The simulator's truth file is not
exported: like a bank, the example has labels only. docs/your-data.md imports it with
mapping.toml beside this script.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from stream.simulate.config import build_config
from stream.simulate.engine import simulate
from stream.simulate.writers import write_files

NEW_YORK = ZoneInfo("America/New_York")
CARD_CHANNELS = {"card", "ecommerce", "atm"}
FRAUD_TYPES = {
    "card_testing": "CARD_TESTING",
    "account_takeover": "ACCOUNT_TAKEOVER",
    "stolen_card": "LOST_STOLEN",
    "compromised_terminal": "SKIMMING",
}
PAYMENT_COLUMNS = [
    "TxnRef", "TxnDateTime", "ClientNo", "CardToken", "EntryMode", "Amount", "Ccy",
    "MerchantId", "MerchantCountry", "MCC", "TerminalId", "DeviceHash",
]  # fmt: skip
CHARGEBACK_COLUMNS = ["CbRef", "OrigTxnRef", "ReceivedOn", "Outcome", "FraudType"]
MINOR_DIGITS = {"JPY": 0, "KRW": 0}


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as file:
        for line in file:
            yield orjson.loads(line)


def _digits(event_id: str) -> int:
    return int(hashlib.blake2b(event_id.encode(), digest_size=4).hexdigest(), 16)


def _local(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339).astimezone(NEW_YORK)


def _amount(minor: int, currency: str) -> str:
    digits = MINOR_DIGITS.get(currency, 2)
    return f"{minor / 10**digits:.{digits}f}"


def _entry_mode(event: dict[str, str]) -> str:
    if event["channel"] == "atm":
        return "ATM"
    if event["channel"] == "ecommerce":
        return "ECOM"
    return "CTLS" if _digits(event["event_id"]) % 3 == 0 else "CHIP"


def export(sim: Path, out: Path) -> tuple[int, int]:
    """Write payments.csv and chargebacks.csv from simulator output; (payments, chargebacks)."""
    refs: dict[str, str] = {}
    times: dict[str, datetime] = {}
    out.mkdir(parents=True, exist_ok=True)
    with (out / "payments.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(PAYMENT_COLUMNS)
        for event in _jsonl(sim / "events.jsonl"):
            if event["channel"] not in CARD_CHANNELS:
                continue
            ref = f"P{len(refs) + 1:08d}"
            refs[event["event_id"]] = ref
            local = _local(event["event_time"])
            times[event["event_id"]] = local
            writer.writerow(
                [
                    ref,
                    local.strftime("%m/%d/%Y %I:%M:%S %p"),
                    event["customer_id"].removeprefix("cus-"),
                    event["account_id"].removeprefix("acc-"),
                    _entry_mode(event),
                    _amount(event["amount_minor"], event["currency"]),
                    event["currency"],
                    event["counterparty_id"],
                    event["country"].lower(),
                    event.get("mcc", ""),
                    event.get("terminal_id", ""),
                    event.get("device_id", ""),
                ]
            )
    rows: list[list[str]] = []
    for label in _jsonl(sim / "labels.jsonl"):
        if label["event_id"] not in refs or label["typology"] not in FRAUD_TYPES:
            continue
        received = _local(label["label_time"]).date().isoformat()
        rows.append([refs[label["event_id"]], received, "FRAUD", FRAUD_TYPES[label["typology"]]])
    # Disputes that turned out legitimate (3 in 1,000 payments), reversed 30 days on.
    labelled = {row[0] for row in rows}
    for event_id, ref in refs.items():
        if ref not in labelled and _digits(event_id) % 1000 < 3:
            received = (times[event_id] + timedelta(days=30)).date().isoformat()
            rows.append([ref, received, "REVERSED", ""])
    rows.sort(key=lambda row: (row[1], row[0]))
    # Two rows a bank's file really holds: a chargeback for a payment outside this export, and
    # one keyed in with a received date before its payment.
    first_ref, first_time = next(iter(refs.values())), next(iter(times.values()))
    rows.append(["P99999999", rows[-1][1], "FRAUD", "LOST_STOLEN"])
    rows.append(
        [first_ref, (first_time - timedelta(days=3)).date().isoformat(), "FRAUD", "SKIMMING"]
    )
    with (out / "chargebacks.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(CHARGEBACK_COLUMNS)
        for number, row in enumerate(rows, 1):
            writer.writerow([f"CB{number:06d}", *row])
    return len(refs), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    config = build_config(
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        start_date="2026-09-15",
        prevalence=0.01,
        exclude=[  # an issuer's card export: the laundering typologies play out elsewhere
            "structuring",
            "mule_fan_in_out",
            "round_tripping",
            "pass_through",
            "dormant_reactivation",
            "high_risk_jurisdiction",
        ],
    )
    with tempfile.TemporaryDirectory() as folder:
        write_files(simulate(config), Path(folder), progress=False)
        payments, chargebacks = export(Path(folder), args.out)
    print(f"wrote {payments:,} payments and {chargebacks:,} chargebacks to {args.out}")


if __name__ == "__main__":
    main()
