"""The model's own settings: where models live and how they run.

A section of the one settings object (``stream.settings.Settings.model``, environment
``RISKSTREAM_MODEL__...``), defined here so that ``models`` reads its settings without importing
the streaming side; ``stream.settings`` composes it with the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelSettings(BaseModel):
    """Where models live and how they run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_dir: Path = Field(
        Path("registry"),
        description="Versioned model directories + champion; a relative path is under `home`.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA when a GPU is present."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads on CPU; default: physical cores."
    )
    quantize_int8: bool = Field(False, description="Dynamic int8 quantisation on CPU.")
    target_maturity_days: float | None = Field(
        None,
        ge=0,
        description="Training and evaluation from labels (no truth file): an unlabelled event "
        "counts as legitimate once this many days old, younger events are left out. None: "
        "estimated from the data (the 90th percentile of the suspicious labels' delays, "
        "models/maturity.py). Same meaning as trainer.negative_maturity_days.",
    )
