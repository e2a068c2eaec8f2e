"""An external sort of records (single lines of bytes) in bounded memory.

Records are kept in memory until ``run_rows`` of them have arrived; that run is then sorted
and written to a temporary file. Reading back merges every run with ``heapq.merge``, so at
most one run plus one record per spilled run is ever in memory. An input that fits in one
run is sorted in memory and never touches the disk.

A record sorts by its bytes: callers put a fixed-width key in front (``%013d`` epoch
milliseconds, then an id and a row number separated by tabs - ids cannot hold a tab), so
byte order is the order wanted and no record has to be parsed to be compared.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

DEFAULT_RUN_ROWS: Final = 200_000
"""Records sorted in memory at once: ~100 MB of event lines; measured in bench_import."""
_WRITE_SLICE: Final = 5_000


def record_key(moment_ms: int, ident: str, row: int) -> bytes:
    """The sort prefix: time, then id, then input row (so equal ids keep input order)."""
    return b"%013d\t%s\t%012d\t" % (moment_ms, ident.encode(), row)


def split_record(record: bytes) -> tuple[int, str, int, bytes]:
    """(time ms, id, row, payload) of a record made with :func:`record_key`."""
    moment, ident, row, payload = record.split(b"\t", 3)
    return int(moment), ident.decode(), int(row), payload


class ExternalSorter:
    """Add records in any order; iterate them sorted once (:meth:`sorted`)."""

    def __init__(self, directory: Path, *, run_rows: int = DEFAULT_RUN_ROWS) -> None:
        if run_rows < 1:
            raise ValueError("run_rows must be at least 1")
        self._directory = directory
        self._run_rows = run_rows
        self._buffer: list[bytes] = []
        self._runs: list[Path] = []
        self.count = 0

    @property
    def runs(self) -> int:
        """Runs written to disk so far."""
        return len(self._runs)

    def add(self, records: list[bytes]) -> None:
        self._buffer.extend(records)
        self.count += len(records)
        while len(self._buffer) >= self._run_rows:
            self._spill(self._buffer[: self._run_rows])
            del self._buffer[: self._run_rows]

    def _spill(self, records: list[bytes]) -> None:
        records.sort()
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, kept for merging)
            dir=self._directory, prefix=".run-", suffix=".tmp", delete=False
        )
        with handle:
            # in slices: one join of a whole run would briefly hold a second copy of it
            for start in range(0, len(records), _WRITE_SLICE):
                handle.write(b"\n".join(records[start : start + _WRITE_SLICE]) + b"\n")
        self._runs.append(Path(handle.name))

    def unsorted(self) -> Iterator[bytes]:
        """Every record so far, in no particular order (a cheap pre-scan)."""
        for run in self._runs:
            with run.open("rb") as file:
                for line in file:
                    yield line[:-1]
        yield from self._buffer

    def sorted(self) -> Iterator[bytes]:
        """Every record, in byte order."""
        if not self._runs:
            self._buffer.sort()
            yield from self._buffer
            return
        if self._buffer:
            self._spill(self._buffer)
            self._buffer = []
        files = [run.open("rb", buffering=1 << 20) for run in self._runs]
        try:
            for line in heapq.merge(*files):
                yield line[:-1]
        finally:
            for file in files:
                file.close()

    def close(self) -> None:
        """Delete the run files and drop the buffer."""
        for run in self._runs:
            run.unlink(missing_ok=True)
        self._runs = []
        self._buffer = []
