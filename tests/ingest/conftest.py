"""Hand-written bank exports whose names and formats are unlike riskstream's, and their
mappings: a card-payments CSV (semicolons, Paris wall-clock times, euros with a decimal comma,
a fraud flag and report date in the same table) and a wires Parquet file (typed columns,
cents, debit/credit codes) with a separate Parquet table of investigation outcomes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from stream.cli import app

CARD_HEADER = (
    "TxnRef;TxnDateTime;ClientNo;CardToken;EntryMode;Amount;Ccy;MerchantId;MerchantCountry;"
    "MCC;TerminalId;FraudFlag;ReportedOn"
)
# Row numbers (1-based, header excluded) and what each one exercises.
CARD_ROWS = [
    "T0003;02/01/2026 09:15:00;1001;tok-a1;CHIP;12,50;EUR;M-77;fr;5411;TERM9;N;",  # 1
    "T0001;01/01/2026 23:30:00;1001;tok-a1;ECOM;99,99;EUR;M-12;de;5732;;Y;20/01/2026",  # 2
    "T0002;01/01/2026 08:00:00;1002;tok-b2;ATM;60;EUR;ATM-3;fr;6011;;N;",  # 3
    "T0004;31/02/2026 10:00:00;1002;tok-b2;CHIP;5,00;EUR;M-77;fr;5411;TERM9;N;",  # 4 bad date
    "T0005;03/01/2026 10:00:00;1003;tok-c3;SWIPE;5,00;EUR;M-77;fr;5411;TERM9;N;",  # 5 unmapped
    "T0006;03/01/2026 11:00:00;1003;tok-c3;CHIP;5,005;EUR;M-77;fr;5411;TERM9;N;",  # 6 amount
    "T0001;03/01/2026 12:00:00;1003;tok-c3;CHIP;7,00;EUR;M-77;fr;5411;TERM9;N;",  # 7 duplicate
    "T0007;29/03/2026 02:30:00;1003;tok-c3;CHIP;7,00;EUR;M-77;fr;5411;TERM9;N;",  # 8 DST gap
    "T0008;04/01/2026 10:00:00;1004;tok-d4;CHIP;7,00;EUR;M-77;fr;54111;TERM9;N;",  # 9 mcc
    "T0009;05/01/2026 10:00:00;1004;tok-d4;CHIP;7,00;EUR;M-77;fr;5411;TERM9;Y;01/01/2026",  # 10
    "T0010;05/01/2026 10:00:00;;tok-d4;CHIP;7,00;EUR;M-77;fr;5411;TERM9;N;",  # 11 no client
    "T0011;06/01/2026 10:00:00;1004;tok-d4;CHIP;7,00;EUR;M-77;fr;5411;TERM9;Y;",  # 12 no date
    "T0012;06/01/2026 12:00:00;1005;tok-e5;CHIP;7,00;EUR;M-77;fr;5411;TERM9;X;",  # 13 flag X
    "T0013;07/01/2026 10:00:00;1005;tok-e5;CHIP;3,10;EUR;M-77;xx;5411;TERM9;N;",  # 14 country
    "T0014;07/01/2026 12:00:00;1005;tok-e5;CTLS;3,10;EUR;M-78;fr;5411;TERM9;N;",  # 15
]
CARD_MAPPING = """
[input]
delimiter = ";"

[events]
event_id = { column = "TxnRef", prefix = "card-" }
event_time = { column = "TxnDateTime", format = "%d/%m/%Y %H:%M:%S", timezone = "Europe/Paris" }
customer_id = { column = "ClientNo", prefix = "cust-" }
account_id = "CardToken"
channel = { column = "EntryMode", values = { CHIP = "card", CTLS = "card", ECOM = "ecommerce", ATM = "atm" } }
direction = { value = "outbound" }
amount = { column = "Amount", unit = "major", decimal_separator = "," }
currency = "Ccy"
counterparty_id = { column = "MerchantId", prefix = "m-" }
counterparty_type = { column = "EntryMode", values = { ATM = "atm" }, other = "merchant" }
terminal_id = "TerminalId"
mcc = "MCC"
country = { column = "MerchantCountry", case = "upper" }

[labels]
from = "events"
verdict = { column = "FraudFlag", values = { Y = "suspicious", N = "unlabelled" } }
typology = { value = "stolen_card" }
source = { value = "chargeback" }
label_time = { column = "ReportedOn", format = "%d/%m/%Y", timezone = "Europe/Paris", day_end = true }
"""  # noqa: E501 (TOML inline tables are one line)

WIRES_MAPPING = """
[events]
event_id = { column = "WireRef", prefix = "wire-" }
event_time = "ValueDateTime"
customer_id = { column = "OrderingCustomer", prefix = "cif-" }
account_id = "DebitAccount"
channel = { value = "wire" }
direction = { column = "DrCr", values = { D = "outbound", C = "inbound" } }
amount = { column = "AmountCents", unit = "minor" }
currency = "CcyCode"
counterparty_id = "BeneficiaryAccount"
counterparty_type = { value = "account" }
country = "BeneficiaryBankCountry"
memo = "Remittance"

[labels]
from = "file"
event_id = "WireRef"
label_time = { column = "ClosedOn", timezone = "UTC", day_end = true }
verdict = { column = "Outcome", values = { SAR = "suspicious", NO_SAR = "legitimate", OPEN = "unlabelled" } }
typology = { column = "Pattern", values = { MULE = "mule_fan_in_out", LAYERING = "pass_through", SMURFING = "structuring" } }
source = { value = "confirmed_case" }
label_id = { column = "CaseId", prefix = "case-" }
"""  # noqa: E501


def utc(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def card_export(tmp_path: Path) -> tuple[Path, Path]:
    """(payments.csv, mapping.toml)."""
    csv = tmp_path / "payments.csv"
    csv.write_text("\n".join([CARD_HEADER, *CARD_ROWS]) + "\n", encoding="utf-8")
    mapping = tmp_path / "card.toml"
    mapping.write_text(CARD_MAPPING)
    return csv, mapping


# WireRef, value date (UTC), ordering customer, cents, currency, beneficiary country, D/C
WIRE_ROWS = [
    ("W001", utc(2), 501, 950_000, "EUR", "GB", "D", "invoice 1"),
    ("W002", utc(3), 501, 12_000, "EUR", "GB", "D", None),
    ("W003", utc(10), 502, 499_900, "GBP", "CY", "D", "loan"),
    ("W004", utc(4), 502, 10_000, "EUR", "AE", "C", "refund"),
    ("W005", utc(5), 503, 900_000, "EUR", "GB", "D", "x"),
    ("W006", utc(6), 503, 900_000, "EUR", "GB", "D", "y"),
    ("W007", utc(7), 504, 77, "EUR", "GB", "D", "z"),
    ("W008", utc(8), 504, 5, "EURO", "GB", "D", "bad currency"),  # its event is rejected
]
# CaseId, WireRef, closed on, outcome, pattern: one row per case, and what each exercises
CASE_ROWS = [
    ("1", "W001", date(2026, 4, 20), "SAR", "MULE"),
    ("2", "W002", date(2026, 4, 5), "NO_SAR", None),
    ("3", "W999", date(2026, 4, 1), "SAR", "MULE"),  # unknown_event
    ("4", "W003", date(2026, 3, 9), "SAR", "LAYERING"),  # label_before_event (wire: 10 March)
    ("5", "W004", date(2026, 4, 2), "OPEN", None),  # no label yet
    ("6", "W005", date(2026, 4, 3), "SAR", "SMURFING"),
    ("6", "W006", date(2026, 4, 3), "SAR", "SMURFING"),  # duplicate_label_id
    ("8 B", "W007", date(2026, 4, 4), "SAR", "MULE"),  # invalid_label: not an identifier
    ("9", "W008", date(2026, 4, 4), "SAR", "MULE"),  # event_rejected
    ("10", "W001", date(2026, 4, 25), "NO_SAR", None),  # a second label for W001
    ("11", "W002", date(2026, 4, 6), "MAYBE", None),  # unmapped_value
]


@pytest.fixture
def wires_export(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(wires.parquet, cases.parquet, mapping.toml)."""
    ref, when, customer, cents, currency, country, side, memo = zip(*WIRE_ROWS, strict=True)
    wires = pa.table(
        {
            "WireRef": ref,
            "ValueDateTime": pa.array(when, pa.timestamp("us", tz="UTC")),
            "OrderingCustomer": pa.array(customer, pa.int64()),
            "DebitAccount": ["FR76300060000112345678901"] * len(ref),
            "AmountCents": pa.array(cents, pa.int64()),
            "CcyCode": currency,
            "BeneficiaryAccount": [f"GB29NWBK60161331926{n:02d}" for n in range(len(ref))],
            "BeneficiaryBankCountry": country,
            "DrCr": side,
            "Remittance": pa.array(memo, pa.string()),
        }
    )
    case, wire, closed, outcome, pattern = zip(*CASE_ROWS, strict=True)
    cases = pa.table(
        {
            "CaseId": case,
            "WireRef": wire,
            "ClosedOn": pa.array(closed, pa.date32()),
            "Outcome": outcome,
            "Pattern": pa.array(pattern, pa.string()),
        }
    )
    folder = tmp_path / "wires"
    folder.mkdir()
    pq.write_table(wires, folder / "wires.parquet")
    pq.write_table(cases, folder / "cases.parquet")
    (folder / "wires.toml").write_text(WIRES_MAPPING)
    return folder / "wires.parquet", folder / "cases.parquet", folder / "wires.toml"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, ["data", "import", *args, "--no-progress"])
