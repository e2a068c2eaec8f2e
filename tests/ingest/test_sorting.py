"""The external sort: any number of spilled runs gives the in-memory order, and cleans up."""

from __future__ import annotations

import random
from pathlib import Path

from stream.ingest.sorting import ExternalSorter, record_key, split_record


def records(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for row in range(1, count + 1):
        moment = 1_767_225_600_000 + rng.randrange(0, 5_000)  # many equal times
        ident = f"ev-{rng.randrange(0, 50)}" + ("x" * rng.randrange(0, 3))
        out.append(record_key(moment, ident, row) + b'{"n":%d}' % row)
    return out


def test_spilled_runs_merge_into_the_in_memory_order(tmp_path: Path) -> None:
    data = records(2_000, seed=3)
    sorter = ExternalSorter(tmp_path, run_rows=97)
    for start in range(0, len(data), 300):
        sorter.add(data[start : start + 300])
    assert sorter.runs == 20
    assert sorted(sorter.unsorted()) == sorted(data)
    merged = list(sorter.sorted())
    assert merged == sorted(data)
    keys = [split_record(r)[:3] for r in merged]
    assert keys == sorted(keys)  # byte order is (time, id, row) order, ids of any length
    sorter.close()
    assert list(tmp_path.iterdir()) == []


def test_a_small_input_never_touches_the_disk(tmp_path: Path) -> None:
    sorter = ExternalSorter(tmp_path, run_rows=1000)
    sorter.add(records(10, seed=1))
    assert list(sorter.sorted()) == sorted(records(10, seed=1))
    assert sorter.runs == 0
    assert list(tmp_path.iterdir()) == []
    assert split_record(record_key(5, "a-1", 7) + b"{}") == (5, "a-1", 7, b"{}")
