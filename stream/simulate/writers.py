"""Write a simulation to files: events, labels and truth as JSONL and/or Parquet, plus a manifest.

Layout of ``<out>/``::

    events.jsonl   / events.parquet   TransactionEvent per line, ordered by event time
    labels.jsonl   / labels.parquet   LabelEvent per line (chargebacks, confirmed cases),
                                      ordered by label time
    truth.jsonl    / truth.parquet    one row per event, same order as events: what it really is
    manifest.json                     config, counts per typology, sha256 of every file

Everything is deterministic: no timestamps of the run itself, fixed key order, and Parquet
written by a pinned pyarrow with fixed options, so the same config gives the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from schemas import Typology
from stream.simulate import catalog as cat
from stream.simulate.engine import Simulation
from stream.simulate.errors import OutputError
from stream.simulate.render import JSON_CHUNK, Renderer, arrow_table, gc_paused

Format = Literal["jsonl", "parquet", "both"]
ROW_GROUP = 50_000  # Parquet rows per row group; JSON is rendered in smaller ranges within
FILES = ("events", "labels", "truth")


def _chunks(lo: int, hi: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(lo, hi, size):
        yield start, min(hi, start + size)


class _HashingWriter:
    """A binary file that also computes the sha256 of what is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("wb")
        self.digest = hashlib.sha256()
        self.rows = 0

    def write_lines(self, lines: list[bytes]) -> None:
        if lines:
            data = b"\n".join(lines) + b"\n"
            self.file.write(data)
            self.digest.update(data)
            self.rows += len(lines)

    def close(self) -> dict[str, Any]:
        self.file.close()
        return {
            "rows": self.rows,
            "bytes": self.path.stat().st_size,
            "sha256": self.digest.hexdigest(),
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _ParquetSink:
    """Row groups appended chunk by chunk, with options that keep the bytes reproducible."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", write_statistics=True
            )
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self, empty_schema: Callable[[], pa.Table]) -> dict[str, Any]:
        if self.writer is None:  # nothing was written: still leave a valid, empty file
            self.write(empty_schema())
        assert self.writer is not None
        self.writer.close()
        return {"rows": self.rows, "bytes": self.path.stat().st_size, "sha256": _sha256(self.path)}


def counts(sim: Simulation) -> dict[str, Any]:
    """What the run contains, for the manifest and the CLI summary."""
    typology = sim.events["typology"]
    by_typology = np.bincount(typology, minlength=len(cat.TYPOLOGIES))
    plan = sim.plan
    suspicious = int((typology != 0).sum())
    return {
        "customers": sim.config.customers,
        "events": len(sim.events),
        "suspicious_events": suspicious,
        "prevalence": round(suspicious / max(1, len(sim.events)), 6),
        "labels": len(sim.labels),
        "events_by_typology": {t.value: int(by_typology[i]) for i, t in enumerate(cat.TYPOLOGIES)},
        "scenarios_by_typology": {t.value: n for t, n in plan.scenarios.items()},
        "event_budget_by_typology": {t.value: n for t, n in plan.budget_events.items()},
        "lookalike_scenarios": dict(sorted(plan.lookalike_scenarios.items())),
        "skipped_typologies": {t.value: why for t, why in plan.skipped.items()},
    }


def manifest(sim: Simulation, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "generator": "riskstream simulate",
        "riskstream_version": importlib.metadata.version("riskstream"),
        "run_tag": sim.config.run_tag,
        "seed": sim.config.seed,
        "config": sim.config.model_dump(mode="json"),
        "counts": counts(sim),
        "files": files,
        "typologies": [t.value for t in Typology],
    }


def write_files(
    sim: Simulation,
    out: Path,
    *,
    fmt: Format = "jsonl",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the run under ``out``; returns the manifest (also written as manifest.json)."""
    out.mkdir(parents=True, exist_ok=True)
    suffixes = {"jsonl": ["jsonl"], "parquet": ["parquet"], "both": ["jsonl", "parquet"]}[fmt]
    targets = [out / f"{name}.{suffix}" for name in FILES for suffix in suffixes]
    existing = [p.name for p in [*targets, out / "manifest.json"] if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace")

    renderer = Renderer(sim)
    n_events, n_labels = len(sim.events), len(sim.labels)
    jsonl = (
        {name: _HashingWriter(out / f"{name}.jsonl") for name in FILES}
        if "jsonl" in suffixes
        else {}
    )
    parquet = (
        {name: _ParquetSink(out / f"{name}.parquet") for name in FILES}
        if "parquet" in suffixes
        else {}
    )
    t_ms = sim.events["t_ms"]
    with (
        gc_paused(),
        tqdm(
            total=n_events + n_labels,
            unit="ev",
            unit_scale=True,
            desc="writing",
            disable=not progress,
        ) as bar,
    ):
        for lo, hi in _chunks(0, n_events, ROW_GROUP):
            for start, stop in _chunks(lo, hi, JSON_CHUNK) if jsonl else ():
                jsonl["events"].write_lines(renderer.events_json(start, stop))
                jsonl["truth"].write_lines(renderer.truth_json(start, stop))
            if parquet:
                parquet["events"].write(_events_table(renderer, lo, hi))
                times = {"event_time": t_ms[lo:hi]}
                parquet["truth"].write(arrow_table(renderer.truth_columns(lo, hi), times))
            bar.update(hi - lo)
        for lo, hi in _chunks(0, n_labels, ROW_GROUP):
            for start, stop in _chunks(lo, hi, JSON_CHUNK) if jsonl else ():
                jsonl["labels"].write_lines(renderer.labels_json(start, stop))
            if parquet:
                parquet["labels"].write(_labels_table(renderer, lo, hi))
            bar.update(hi - lo)

    files: dict[str, dict[str, Any]] = {}
    for name, writer in jsonl.items():
        files[f"{name}.jsonl"] = writer.close()
    empty = {
        "events": lambda: _events_table(renderer, 0, 0),
        "truth": lambda: arrow_table(renderer.truth_columns(0, 0), {"event_time": t_ms[:0]}),
        "labels": lambda: _labels_table(renderer, 0, 0),
    }
    for name, sink in parquet.items():
        files[f"{name}.parquet"] = sink.close(empty[name])
    result = manifest(sim, dict(sorted(files.items())))
    (out / "manifest.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return result


def _events_table(renderer: Renderer, lo: int, hi: int) -> pa.Table:
    columns: dict[str, list[Any]] = {"schema_version": [1] * (hi - lo)}
    columns.update(renderer.event_columns(lo, hi))
    return arrow_table(columns, {"event_time": renderer.sim.events["t_ms"][lo:hi]})


def _labels_table(renderer: Renderer, lo: int, hi: int) -> pa.Table:
    columns: dict[str, list[Any]] = {"schema_version": [1] * (hi - lo)}
    columns.update(renderer.label_columns(lo, hi))
    e, labels = renderer.sim.events, renderer.sim.labels
    times = {"event_time": e["t_ms"][labels.rows[lo:hi]], "label_time": labels.label_ms[lo:hi]}
    return arrow_table(columns, times)
