"""Labels for a replay: read from a file or a topic. When each one reaches the run's context
is the label-reveal clock's (``stream.context.reveal``), shared with dataset building.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from schemas import DecodeError, LabelEvent, decode
from stream.replay.errors import LabelSourceError, SourceError
from stream.replay.sources import JSONL_SUFFIXES, PARQUET_SUFFIXES, TopicSource, parquet_row_json
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)


def _decoded(values: Iterable[tuple[str, bytes | None]]) -> Iterator[LabelEvent]:
    skipped = 0
    for where, value in values:
        try:
            yield decode(LabelEvent, value)
        except DecodeError as error:
            skipped += 1
            if skipped <= 3:
                log.warning("skipping an invalid label at %s: %s", where, error.reason)
    if skipped:
        log.warning("skipped %d invalid label(s) in all", skipped)


def read_label_file(path: Path) -> list[LabelEvent]:
    """LabelEvents from a JSONL or Parquet file (e.g. a simulator's labels.jsonl)."""
    if not path.is_file():
        raise LabelSourceError(f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return list(_decoded((f"{path.name}:{i}", parquet_row_json(r)) for i, r in enumerate(rows)))
    if suffix not in JSONL_SUFFIXES:
        raise LabelSourceError(f"{path}: expected a .jsonl or .parquet file")
    with path.open("rb") as file:
        lines = [(f"{path.name}:{n}", line.strip()) for n, line in enumerate(file, 1)]
    return list(_decoded((where, line) for where, line in lines if line))


def read_label_topic(
    kafka: KafkaSettings, topic: str, *, timeout_s: float = 60.0
) -> list[LabelEvent]:
    """Every label on ``topic`` up to its end when called (labels are few: a share of events).
    Read without a consumer group commit; the schedule decides when each one counts."""
    try:
        source = TopicSource(
            kafka,
            topic,
            group_id=f"riskstream-replay-labels-{uuid.uuid4().hex[:8]}",
            stall_timeout_s=timeout_s,
        )
    except SourceError as error:
        raise LabelSourceError(f"label {error}") from error
    try:
        return list(_decoded((record.source, record.value) for record in source.records()))
    except SourceError as error:
        raise LabelSourceError(f"label {error}") from error
    finally:
        source.close()
