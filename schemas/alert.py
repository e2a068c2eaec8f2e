"""`Alert`: what the scorer tells risk teams about an event it found risky."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import WIRE_MODEL_CONFIG, Typology, UtcDatetime
from schemas.transaction import TransactionEvent

# Namespace for deterministic alert ids (uuid5). Never change it: ids would stop matching.
ALERT_ID_NAMESPACE = uuid.UUID("6f1d3a52-4c1e-4a8e-9a43-2f0c6c1b7e19")

# Kafka header carrying the alert id on every alert message, so a subscriber can drop repeats
# without parsing the value.
ALERT_ID_HEADER = "riskstream.alert_id"


def alert_id_for(event_id: str, model_version: str) -> str:
    """The same event scored by the same model always gets the same alert id, so a reprocessed
    batch (at-least-once delivery) produces duplicates that subscribers can drop by id."""
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{event_id}\x1f{model_version}"))


class Reason(BaseModel):
    """One narrative clause that drove the score."""

    model_config = WIRE_MODEL_CONFIG

    clause: str = Field(max_length=64, description="Clause id, stable across narratives.")
    text: str = Field(max_length=512, description="The clause as the model read it.")
    weight: float = Field(description="How much the score fell when the clause was hidden.")


class Alert(BaseModel):
    """An event scored above the model's alert threshold."""

    model_config = WIRE_MODEL_CONFIG

    schema_version: Literal[1] = Field(1, description="Bumped on any incompatible change.")
    alert_id: str = Field(max_length=64, description="uuid5(event_id, model_version).")
    mode: Literal["live", "shadow", "backtest"] = Field(description="Who produced the alert.")
    event: TransactionEvent
    score: float = Field(ge=0.0, le=1.0, description="Risk probability from the model.")
    threshold: float = Field(ge=0.0, le=1.0, description="The model's alert threshold.")
    typology: Typology = Field(description="Most likely suspicious typology.")
    typology_probability: float = Field(ge=0.0, le=1.0)
    reasons: list[Reason] = Field(max_length=16)
    narrative: str = Field(max_length=4096, description="The text the model read.")
    model_version: str = Field(max_length=128)
    narrative_version: str = Field(max_length=64)
    event_time: UtcDatetime
    received_at: UtcDatetime = Field(description="When the scorer consumed the event.")
    scored_at: UtcDatetime = Field(description="When the model scored it.")
    emitted_at: UtcDatetime = Field(description="When the alert was handed to the producer.")
