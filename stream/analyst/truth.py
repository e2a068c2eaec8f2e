"""The simulator's truth, as the simulated analyst looks events up in it.

The simulator writes ``truth.jsonl`` under ``--out`` before it streams anything with
``--kafka`` (give both), so the file is complete before the first alert. A demo started again
rewrites it: an event id that is not found makes the file be read again if it changed since.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stream.simulate.truth import TruthRecord, read_truth

log = logging.getLogger(__name__)


class TruthFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, TruthRecord] = {}
        self._stamp: tuple[int, int] | None = None

    def _reload_if_changed(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                self._records = read_truth(self.path)
            except ValueError as exc:  # still being written: try again at the next miss
                log.warning("truth file %s not readable yet: %s", self.path, exc)
                return
            self._stamp = stamp
            log.info("truth: %d events from %s", len(self._records), self.path)

    def get(self, event_id: str) -> TruthRecord | None:
        record = self._records.get(event_id)
        if record is None:
            self._reload_if_changed()
            record = self._records.get(event_id)
        return record

    def __getitem__(self, event_id: str) -> TruthRecord:
        record = self.get(event_id)
        if record is None:
            raise KeyError(event_id)
        return record
