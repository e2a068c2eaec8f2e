"""Input files read in bounded batches of the mapped columns only.

* CSV (pyarrow's streaming reader): every mapped column is read as text, so an account
  number ``00123`` stays ``00123`` and every conversion is ours, row by row, with a reason
  when it fails. Row N is the N-th data record (the header and blank lines are not counted).
  A record that does not split into the header's columns stops the import with its line
  number: a wrong delimiter or a stray quote misaligns every field after it, and importing
  the rest as if nothing happened would be guessing.
* Parquet: typed columns, read one batch at a time; row N is the N-th row.
* JSONL: one object per line, parsed with orjson; values become text as written (numbers
  keep their digits, ``12.30`` stays exact), nested objects are a rejected row; row N is
  line N (blank lines are skipped but counted). pyarrow's JSON reader is not used because it
  fails a whole block when a field's type changes between lines.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from stream.ingest.errors import InputError
from stream.ingest.mapping import Format, InputOptions

BATCH_ROWS: Final = 50_000
_CSV_BLOCK_BYTES: Final = 4 << 20


@dataclass
class Batch:
    """Consecutive rows of one input file: the mapped columns, equally long."""

    first_row: int
    """1-based row number of the batch's first row."""
    size: int
    columns: dict[str, pa.Array]
    malformed: dict[int, str] = field(default_factory=dict)
    """Row index in the batch -> why the row could not be read at all (JSONL only)."""


class _CountingFile(io.RawIOBase):
    """A binary file that counts the bytes read from it (the progress bar's position)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self.position += count or 0
        return int(count or 0)

    def close(self) -> None:
        self._raw.close()
        super().close()


class TableReader:
    """Batches of ``columns`` from ``path``; :attr:`names` are every column the file has."""

    def __init__(self, path: Path, options: InputOptions, columns: set[str]) -> None:
        if not path.is_file():
            raise InputError(f"{path} is not a file")
        if path.stat().st_size == 0:
            raise InputError(f"{path.name} is empty")
        self.path = path
        self.options = options
        self.format: Format = options.resolve_format(path)
        self.size_bytes = path.stat().st_size
        self.rows_total: int | None = None
        self._counter: _CountingFile | None = None
        self.names = self._names()
        missing = sorted(columns - set(self.names))
        if missing:
            shown = ", ".join(self.names[:20]) + (" ..." if len(self.names) > 20 else "")
            raise InputError(
                f"{path.name} has no column {', '.join(map(repr, missing))} named in the "
                f"mapping (its columns: {shown})"
            )
        self.columns = sorted(columns)

    # -- what the file holds -----------------------------------------------------------------

    def _names(self) -> list[str]:
        if self.format == "parquet":
            try:
                parquet = pq.ParquetFile(self.path)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{self.path.name} is not a Parquet file: {exc}") from None
            self.rows_total = parquet.metadata.num_rows
            return list(parquet.schema_arrow.names)
        if self.format == "jsonl":
            return self._jsonl_names()
        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(
                    encoding=self.options.encoding, block_size=1 << 16, use_threads=False
                ),
                # the header only: bad records are found (and reported) when rows are read
                parse_options=pcsv.ParseOptions(
                    delimiter=self.options.delimiter,
                    quote_char=self.options.quote,
                    newlines_in_values=True,
                    invalid_row_handler=lambda _row: "skip",
                ),
                convert_options=pcsv.ConvertOptions(include_columns=[]),
            )
        except (pa.ArrowException, LookupError) as exc:
            raise InputError(f"{self.path.name}: cannot read a CSV header: {exc}") from None
        with reader:
            return list(reader.schema.names)

    def _jsonl_names(self) -> list[str]:
        names: dict[str, None] = {}
        with self.path.open("rb") as file:
            for count, line in enumerate(file):
                if count >= BATCH_ROWS:
                    break
                try:
                    value = orjson.loads(line) if line.strip() else None
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    names.update(dict.fromkeys(value))
        return list(names)

    def position(self) -> tuple[int, int]:
        """(done, total) for the progress bar: bytes for CSV and JSONL, rows for Parquet."""
        if self._counter is not None:
            return self._counter.position, self.size_bytes
        return 0, self.rows_total or 0

    # -- batches -----------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        if self.format == "parquet":
            yield from self._parquet_batches()
        elif self.format == "jsonl":
            yield from self._jsonl_batches()
        else:
            yield from self._csv_batches()

    def _csv_parse_options(self, bad_lines: list[tuple[int | None, int, int]] | None = None) -> Any:
        def on_invalid(row: Any) -> str:
            if bad_lines is not None:
                bad_lines.append((row.number, row.expected_columns, row.actual_columns))
            return "error"

        return pcsv.ParseOptions(
            delimiter=self.options.delimiter,
            quote_char=self.options.quote,
            newlines_in_values=True,
            invalid_row_handler=on_invalid,
        )

    def _csv_batches(self) -> Iterator[Batch]:
        bad_lines: list[tuple[int | None, int, int]] = []
        self._counter = _CountingFile(self.path.open("rb"))
        try:
            reader = pcsv.open_csv(
                self._counter,
                read_options=pcsv.ReadOptions(
                    encoding=self.options.encoding,
                    block_size=_CSV_BLOCK_BYTES,
                    use_threads=False,  # line numbers of bad records are known only then
                ),
                parse_options=self._csv_parse_options(bad_lines),
                convert_options=pcsv.ConvertOptions(
                    column_types=dict.fromkeys(self.columns, pa.string()),
                    include_columns=self.columns,
                    null_values=list(self.options.null_values),
                    strings_can_be_null=True,
                ),
            )
            row = 1
            while True:
                try:
                    record_batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as exc:
                    raise self._csv_error(exc, bad_lines) from None
                yield Batch(
                    row,
                    record_batch.num_rows,
                    {name: record_batch.column(name) for name in self.columns},
                )
                row += record_batch.num_rows
        except pa.ArrowInvalid as exc:
            raise self._csv_error(exc, bad_lines) from None
        finally:
            self._counter.close()

    def _csv_error(
        self, exc: pa.ArrowInvalid, bad_lines: list[tuple[int | None, int, int]]
    ) -> InputError:
        if bad_lines:
            line, expected, actual = bad_lines[-1]
            where = f"line {line}" if line is not None else "a record"
            return InputError(
                f"{self.path.name} {where}: {actual} fields where the header has {expected} "
                "(check the mapping's input.delimiter and input.quote)"
            )
        first = str(exc).splitlines()[0][:200]
        return InputError(f"{self.path.name}: cannot read it as CSV: {first}")

    def _parquet_batches(self) -> Iterator[Batch]:
        row = 1
        try:
            parquet = pq.ParquetFile(self.path)
            for record_batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=self.columns):
                yield Batch(
                    row,
                    record_batch.num_rows,
                    {name: record_batch.column(name) for name in self.columns},
                )
                row += record_batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.path.name}: cannot read near row {row}: {exc}") from None

    def _jsonl_batches(self) -> Iterator[Batch]:
        self._counter = _CountingFile(self.path.open("rb"))
        try:
            reader = io.BufferedReader(self._counter, buffer_size=1 << 20)
            lines: list[bytes] = []
            row = 1
            for line in reader:
                lines.append(line)
                if len(lines) == BATCH_ROWS:
                    yield self._jsonl_batch(row, lines)
                    row += len(lines)
                    lines = []
            if lines:
                yield self._jsonl_batch(row, lines)
        finally:
            self._counter.close()

    def _jsonl_batch(self, first_row: int, lines: list[bytes]) -> Batch:
        malformed: dict[int, str] = {}
        blank: set[int] = set()
        values: dict[str, list[str | None]] = {name: [] for name in self.columns}
        for index, line in enumerate(lines):
            record: Any = None
            if not line.strip():
                blank.add(index)
            else:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    malformed[index] = f"not valid JSON: {exc}"
                else:
                    if not isinstance(record, dict):
                        malformed[index] = f"a JSON {type(record).__name__}, not an object"
                        record = None
            for name in self.columns:
                text, problem = _json_text(record.get(name) if record else None)
                if problem is not None and index not in malformed:
                    malformed[index] = f"column {name!r} holds {problem}"
                values[name].append(text)
        batch = Batch(
            first_row,
            len(lines),
            {name: pa.array(column, type=pa.string()) for name, column in values.items()},
            malformed,
        )
        batch.malformed.update(dict.fromkeys(blank, ""))
        return batch


def _json_text(value: object) -> tuple[str | None, str | None]:
    """A JSON value as the text it was written as, or (None, why not)."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        return repr(value), None  # the shortest text that reads back as this number
    return None, f"a JSON {type(value).__name__} where a value was expected"
