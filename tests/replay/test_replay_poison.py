"""`riskstream replay --file` and `riskstream model dataset --data` on files holding poison rows:
each bad row is reported with its reason (a dead letter of the run; a skipped row of the
dataset) and the rest goes through - never a traceback."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from stream.replay.manifest import RunManifest
from stream.settings import Settings, to_env
from tests.helpers import read_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def poison_rows(template: bytes) -> dict[str, bytes]:
    """Rows that broke the decoder or the replay (issue 16), each built from a good event."""
    event = orjson.loads(template)

    def variant(event_id: str, **changes: object) -> bytes:
        return orjson.dumps({**event, "event_id": event_id, **changes})

    return {
        "overflows in UTC": variant("p-1", event_time="9999-12-31T23:59:59-05:00"),
        "year 0 in UTC": variant("p-2", event_time="0001-01-01T00:00:00+05:00"),
        "digits only": variant("p-3", event_time="1772359200"),
        "duplicate key": variant("p-4")[:-1] + b',"amount_minor":1}',
        "reused id": variant(event["event_id"], amount_minor=event["amount_minor"] + 1),
    }


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **to_env(settings), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_replayed_file_with_poison_rows_dead_letters_them_and_completes(
    replay_settings: Settings, stream_sim: Path, tmp_path: Path, cleanup_namespaces: list[str]
) -> None:
    good = read_jsonl(stream_sim / "events.jsonl")[:150]
    bad = poison_rows(good[10])
    # Dated after the replay itself: refused, and the run's clock does not jump to it.
    future = {
        **orjson.loads(good[20]),
        "event_id": "p-future",
        "event_time": "2046-01-01T00:00:00Z",
    }
    bad["after the replay's now"] = orjson.dumps(future)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([*good, *bad.values()]) + b"\n")
    name = f"poison-{uuid.uuid4().hex[:10]}"
    cleanup_namespaces.append(f"backtest-{name}")

    replayed = cli(
        replay_settings, "replay", "--file", str(path), "--no-labels", "--run-id", name,
        "--batch-size", "64", "--no-progress",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "Traceback" not in replayed.stderr
    manifest = RunManifest.read(replay_settings.home / "runs" / name)
    assert manifest.status == "completed"
    assert manifest.counts.scored == len(good)
    assert manifest.counts.dead_letters == len(bad)
    dead = [orjson.loads(line) for line in read_jsonl(manifest_dir(replay_settings, name))]
    by_value = {base64.b64decode(d["value_b64"]): d for d in dead}
    assert set(by_value) == set(bad.values())
    reasons = {case: by_value[value]["error"] for case, value in bad.items()}
    assert "out of range" in reasons["overflows in UTC"]
    assert "out of range" in reasons["year 0 in UTC"]
    assert "RFC 3339" in reasons["digits only"]
    assert "duplicate key 'amount_minor'" in reasons["duplicate key"]
    assert "duplicate event_id" in reasons["reused id"]
    assert by_value[bad["after the replay's now"]]["error_type"] == "event_time_out_of_window"
    assert manifest.event_time_last is not None
    assert manifest.event_time_last.year == 2026


def manifest_dir(settings: Settings, name: str) -> Path:
    return settings.home / "runs" / name / "dead_letters.jsonl"


def test_a_dataset_with_poison_rows_skips_them_with_their_line_and_reason(
    test_settings: Settings, stream_sim: Path, tmp_path: Path
) -> None:
    data = tmp_path / "sim"
    shutil.copytree(stream_sim, data, ignore=shutil.ignore_patterns("narratives"))
    events = read_jsonl(data / "events.jsonl")
    bad = poison_rows(events[10])
    with (data / "events.jsonl").open("ab") as handle:
        handle.write(b"\n".join(bad.values()) + b"\n")

    built = cli(
        test_settings, "model", "dataset", "--data", str(data), "--out", str(tmp_path / "ds")
    )
    assert built.returncode == 0, built.stderr
    assert "Traceback" not in built.stderr
    first_bad = len(events) + 1
    for offset, case in enumerate(bad):
        assert f"events.jsonl line {first_bad + offset} skipped" in built.stderr, case
    assert f"{len(bad)} of {len(events) + len(bad)} rows skipped" in built.stderr
    assert (tmp_path / "ds" / "meta.json").is_file()
