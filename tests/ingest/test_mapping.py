"""The mapping file: what it accepts, and the one-line error for each way it can be wrong."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from stream.ingest.errors import MappingError
from stream.ingest.mapping import load_mapping, parse_delay

REPO = Path(__file__).resolve().parents[2]
EVENTS = """
[events]
event_id = { column = "Ref", prefix = "b1-" }
event_time = { column = "When", timezone = "Europe/Paris" }
customer_id = "Client"
account_id = "Card"
channel = { value = "card" }
direction = { value = "outbound" }
amount = { column = "Amt", unit = "major" }
currency = { value = "EUR" }
counterparty_id = "Merchant"
counterparty_type = { value = "merchant" }
country = { value = "FR" }
"""


def labels(**keys: str) -> str:
    """EVENTS plus a [labels] table of ``keys`` (TOML values, as written)."""
    return EVENTS + "[labels]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


SUSPICIOUS = '{ value = "suspicious" }'
CHARGEBACK = '{ value = "chargeback" }'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_and_shorthands(tmp_path: Path) -> None:
    example = load_mapping(REPO / "docs/examples/card-payments/mapping.toml")
    assert example.labels is not None
    assert example.labels.from_ == "file"
    mapping = load_mapping(write(tmp_path, EVENTS))
    assert mapping.events.customer_id.column == "Client"
    assert mapping.events.columns() == {"Ref", "When", "Client", "Card", "Amt", "Merchant"}
    assert mapping.labels is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[events\nevent_id = 1", "mapping.toml is not valid TOML: "),
        (
            EVENTS.replace('unit = "major"', 'unit = "cents"'),
            "events.amount.unit: Input should be 'major' or 'minor'",
        ),
        (EVENTS.replace(', unit = "major"', ""), "events.amount.unit: Field required"),
        (
            EVENTS + 'amout = "x"\n',
            "events.amout: unknown key (misspelt, or not a field riskstream knows)",
        ),
        (
            EVENTS.replace('{ value = "card" }', '{ value = "e-commerce" }'),
            "events.channel: 'e-commerce' is not one of: ach, atm, card",
        ),
        (
            EVENTS.replace('{ value = "EUR" }', '{ value = "EURO" }'),
            "events.currency: 'EURO' is not one of: see the ISO code lists",
        ),
        (EVENTS.replace('"Europe/Paris"', '"Mars/Olympus"'), "unknown time zone 'Mars/Olympus'"),
        (
            EVENTS.replace('customer_id = "Client"', 'customer_id = { column = "C", value = "x" }'),
            "give either `column` or `value`",
        ),
        (
            EVENTS.replace('{ value = "merchant" }', '{ value = "merchant", prefix = "x" }'),
            "a constant `value` takes no case",
        ),
        (
            labels(
                **{"from": '"file"'},
                verdict=SUSPICIOUS,
                typology='{ value = "stolen_card" }',
                source=CHARGEBACK,
                delay='"30d"',
            ),
            "labels from a file need `event_id`",
        ),
        (
            labels(**{"from": '"events"'}, verdict=SUSPICIOUS, source=CHARGEBACK, delay='"3d"'),
            "`typology` is required",
        ),
        (
            labels(
                **{"from": '"events"'},
                verdict=SUSPICIOUS,
                typology='{ value = "fraud" }',
                source=CHARGEBACK,
                delay='"30d"',
            ),
            "labels.typology: 'fraud' is not one of",
        ),
        (
            labels(**{"from": '"events"'}, verdict=SUSPICIOUS, typology='"T"', source='"S"'),
            "give `label_time` (a column) or `delay`",
        ),
        (
            labels(
                **{"from": '"events"'},
                verdict='{ value = "legitimate" }',
                source=CHARGEBACK,
                delay='"a month"',
            ),
            "delay 'a month' is not a duration",
        ),
    ],
)
def test_bad_mappings_fail_with_one_line_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(MappingError) as caught:
        load_mapping(write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_mapping_of_legitimate_labels_needs_no_typology(tmp_path: Path) -> None:
    text = labels(
        **{"from": '"events"'},
        verdict='{ value = "legitimate" }',
        source='{ value = "analyst" }',
        delay='"2h"',
    )
    mapping = load_mapping(write(tmp_path, text)).labels
    assert mapping is not None
    assert mapping.delay_td == timedelta(hours=2)


def test_missing_and_unreadable_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="does not exist"):
        load_mapping(tmp_path / "nope.toml")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MappingError, match="cannot read mapping file"):
        load_mapping(tmp_path / "binary.toml")


def test_delays() -> None:
    assert parse_delay("45d") == timedelta(days=45)
    assert parse_delay(" 1.5h ") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="not a duration"):
        parse_delay("-3d")
