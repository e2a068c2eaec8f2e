"""`CycleReport`: what one fine-tune or shadow-review cycle did.

JSON between the job process and the worker, the structured log line of every decision, and
the details of its registry history entry. Kept apart from ``finetune`` so the worker reads it
without importing the training code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["finetune", "review"]


class CycleReport(BaseModel):
    """What one cycle did: JSON between the job process and the worker, and the log line."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode
    decided: bool = Field(description="False: skipped (see skip_reason), nothing compared.")
    skip_reason: str | None = None
    promote: bool = False
    reason: str = ""
    champion: str | None = None
    challenger: str | None = Field(None, description="Registered only when it won.")
    metric: str = "average_precision"
    champion_metrics: dict[str, Any] | None = None
    challenger_metrics: dict[str, Any] | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="Case counts per part.")
    seq: int = Field(0, description="Newest case sequence number the cycle saw.")
    seconds: float = 0.0
