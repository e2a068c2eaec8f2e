"""`ModelNotice`: one message of the models topic (``risk.models``), a change of which model
scores.

The registry's pointers are the truth (scorers re-read them every few seconds); a notice only
makes running scorers look at once. Written by the trainer's promotion cycle and by
``riskstream model promote / rollback``; anyone may subscribe (a dashboard, an audit log).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import WIRE_MODEL_CONFIG, UtcDatetime

REASON_LIMIT = 2000
"""Longer reasons are cut by the writer: a notice is never refused for its prose."""

NoticeAction = Literal["promote", "rollback", "shadow", "unshadow"]


class ModelNotice(BaseModel):
    """What changed (``action``), to which version, why, and when; keyed ``champion``."""

    model_config = WIRE_MODEL_CONFIG

    schema_version: Literal[1] = Field(1, description="Bumped on any incompatible change.")
    action: NoticeAction = Field(
        description="promote: a new champion; rollback: back to an earlier one; shadow: a "
        "challenger scores beside the champion; unshadow: the shadow is withdrawn."
    )
    version: str = Field(
        max_length=256,
        description="The model version the action is about (for unshadow: the champion, or "
        "empty when there is none).",
    )
    reason: str = Field(
        "", max_length=REASON_LIMIT, description="Why, in words (the promotion report's reason)."
    )
    at: UtcDatetime = Field(description="When the notice was written.")
