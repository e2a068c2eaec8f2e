"""The committed JSON Schema files match the models, and what we encode validates against them
(so a subscriber in any language can validate our messages)."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import orjson
import pytest

from schemas import (
    Alert,
    Channel,
    CounterpartyType,
    Direction,
    TransactionEvent,
    Typology,
    alert_id_for,
    encode,
)
from schemas.generate import WIRE_MODELS, render, schema_files


def test_committed_schema_files_match_the_models() -> None:
    for path, expected in schema_files().items():
        assert path.exists(), f"{path.name} missing: run `python -m schemas.generate`"
        assert path.read_bytes() == expected, (
            f"{path.name} is stale: run python -m schemas.generate"
        )


@pytest.mark.parametrize("name", sorted(WIRE_MODELS))
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(orjson.loads(render(WIRE_MODELS[name])))


def test_encoded_alert_validates_and_a_broken_one_does_not() -> None:
    event = TransactionEvent(
        event_id="e1",
        event_time=datetime(2026, 1, 5, 3, 0, tzinfo=UTC),
        customer_id="c1",
        account_id="a1",
        channel=Channel.ECOMMERCE,
        direction=Direction.OUTBOUND,
        amount_minor=129_99,
        currency="EUR",
        counterparty_id="m1",
        counterparty_type=CounterpartyType.MERCHANT,
        mcc="5732",
        country="FR",
    )
    now = datetime(2026, 1, 5, 3, 0, 1, tzinfo=UTC)
    alert = Alert(
        alert_id=alert_id_for("e1", "v1"),
        mode="live",
        event=event,
        score=0.9,
        threshold=0.5,
        typology=Typology.STOLEN_CARD,
        typology_probability=0.7,
        reasons=[],
        narrative="card not present; risky merchant category",
        model_version="v1",
        narrative_version="n1",
        event_time=event.event_time,
        received_at=now,
        scored_at=now,
        emitted_at=now,
    )
    validator = jsonschema.Draft202012Validator(orjson.loads(render(Alert)))
    document = orjson.loads(encode(alert))
    validator.validate(document)
    document["event"]["currency"] = "XYZ"
    assert not validator.is_valid(document)
