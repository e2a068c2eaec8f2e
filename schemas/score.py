"""`Score`: one message of the scores topic (``risk.scores``), every scored event's score.

Emitted when ``scorer.emit_scores`` is on, for dashboards and threshold studies: smaller than
an alert (no event copy, no narrative, no reasons) and written for every event, alerted or not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import WIRE_MODEL_CONFIG, Typology, UtcDatetime


class Score(BaseModel):
    """The model's score of one event, keyed by its customer id on the topic."""

    model_config = WIRE_MODEL_CONFIG

    schema_version: Literal[1] = Field(1, description="Bumped on any incompatible change.")
    event_id: str = Field(max_length=128)
    customer_id: str = Field(max_length=128)
    event_time: UtcDatetime
    score: float = Field(ge=0.0, le=1.0, description="Risk probability from the model.")
    typology: Typology = Field(description="Most likely suspicious typology.")
    model_version: str = Field(max_length=128)
    alerted: bool = Field(description="The score reached the model's alert threshold.")
