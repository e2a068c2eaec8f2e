"""A replay run on disk: where its files are, and ``run.json``, the manifest that says what ran.

Layout of ``<settings.home>/runs/<run-id>/``::

    run.json            RunManifest: model, source and ranges, labels, namespace, topic, counts
    scores.parquet      every scored event (not only alerts: PR-AUC needs all), in replay order
    alerts.jsonl        the alert messages exactly as produced to the run's output topic
    dead_letters.jsonl  inputs that could not be scored, with the reason and original bytes
    report/             written by `riskstream backtest report`

The backtest report reads these files; they are kept apart from the Kafka output topic so a
report can be rebuilt after the topic's retention has passed.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from stream.replay.errors import ReplayError

MANIFEST_FILE: Final = "run.json"
SCORES_FILE: Final = "scores.parquet"
ALERTS_FILE: Final = "alerts.jsonl"
DEAD_LETTERS_FILE: Final = "dead_letters.jsonl"

# The run id goes into a Redis namespace ("backtest-<id>", at most 64 characters of
# [A-Za-z0-9_.-]) and a Kafka topic name, so it is held to what both accept.
RUN_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,54}$")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ReplayError(
            f"run id {run_id!r}: use 1-55 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return run_id


def runs_dir(home: Path) -> Path:
    return home / "runs"


def run_dir(home: Path, run_id: str) -> Path:
    return runs_dir(home) / check_run_id(run_id)


class LabelsUsed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(description="File or topic the labels came from; None: none.")
    reveal_delay_s: float = Field(description="Added to each label's label_time.")
    total: int = 0
    revealed: int = Field(0, description="Labels applied to the run's context by its end.")


class RunCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: int = Field(0, description="Messages read from the source.")
    scored: int = 0
    alerts: int = 0
    dead_letters: int = 0
    batches: int = 0


class RunTimings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started_at: datetime
    finished_at: datetime | None = None
    seconds: float = 0.0
    events_per_s: float = 0.0
    model_seconds: float = Field(0.0, description="Time in the model (scoring), summed.")
    context_seconds: float = Field(0.0, description="Time in Redis context updates, summed.")


class RunManifest(BaseModel):
    """``run.json``: written when the run starts (status ``running``) and at its end."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    run_id: str
    status: Literal["running", "completed", "failed", "interrupted"]
    error: str | None = None
    model_version: str
    alert_threshold: float
    narrative_version: str
    source: dict[str, Any]
    labels: LabelsUsed
    namespace: str = Field(description="The run's own Redis namespace.")
    state_kept: bool = Field(description="False: the namespace was deleted at the end.")
    output_topic: str
    output_partitions: int
    batch_size: int
    speed: float | None = Field(description="N× real time by event time; None: flat out.")
    event_time_first: datetime | None = None
    event_time_last: datetime | None = None
    counts: RunCounts = RunCounts()
    timings: RunTimings

    def write(self, directory: Path) -> None:
        """Atomically (write, then rename), so a reader never sees half a manifest."""
        path = directory / MANIFEST_FILE
        staging = directory / f".{MANIFEST_FILE}.tmp"
        staging.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(staging, path)

    @classmethod
    def read(cls, directory: Path) -> RunManifest:
        path = directory / MANIFEST_FILE
        if not path.is_file():
            raise ReplayError(f"{directory} holds no {MANIFEST_FILE}: not a replay run")
        return cls.model_validate_json(path.read_bytes())
