"""Replays on the real broker and Redis with the session's trained model: the same input gives
the same alerts every time, a replay never touches live Redis keys, and the command line runs
a replay and a report end to end."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import Message

from schemas import TransactionEvent, decode
from stream.context.keys import customer_base
from stream.context.reveal import LabelSchedule
from stream.context.store import ContextStore
from stream.redis_client import connect
from stream.replay.manifest import RunManifest
from stream.replay.outputs import WALL_CLOCK_COLUMNS
from stream.replay.run import ReplayOptions, prepare_replay
from stream.replay.sources import FileSource, TopicSource
from stream.settings import Settings, to_env
from stream.simulate.truth import analyst_dispositions, read_truth
from tests.helpers import read_jsonl

from .conftest import produce_events, read_topic, snapshot_redis

pytestmark = pytest.mark.integration

WALL_CLOCK_FIELDS = ("received_at", "scored_at", "emitted_at")


def run_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def without_wall_clock(message: Message) -> tuple[int, bytes | None, dict[str, Any]]:
    value = message.value()
    assert isinstance(value, bytes)
    alert = orjson.loads(value)
    for name in WALL_CLOCK_FIELDS:
        assert datetime.fromisoformat(alert.pop(name)).tzinfo is not None
    key = message.key()
    return message.partition() or 0, key if isinstance(key, bytes) else None, alert


def test_a_topic_replayed_twice_yields_identical_alerts(
    replay_settings: Settings,
    new_topic: Callable[..., str],
    stream_sim: Path,
    redis_client: redis.Redis[bytes],
    cleanup_namespaces: list[str],
) -> None:
    settings = replay_settings
    topic = new_topic(3, "history")
    values = read_jsonl(stream_sim / "events.jsonl")
    produce_events(settings.kafka, topic, values)
    # A day and a half of the six, picked by broker timestamps (offsets_for_times).
    start = datetime(2026, 2, 17, 0, 0, tzinfo=UTC)
    end = datetime(2026, 2, 17, 14, 0, tzinfo=UTC)
    expected_ids = {
        e.event_id
        for e in (decode(TransactionEvent, v) for v in values)
        if start <= e.event_time < end
    }

    runs: list[RunManifest] = []
    # The second run fetches a few hundred bytes at a time, so partitions interleave in
    # another way: the merge must not care.
    small_fetches = {
        "message.max.bytes": 1000,  # librdkafka's minimum; fetch.max.bytes may not be below
        "fetch.max.bytes": 1000,
        "max.partition.fetch.bytes": 512,
    }
    for overrides in ({}, small_fetches):
        run = prepare_replay(
            settings, ReplayOptions(run_id=run_id("det"), batch_size=64, progress=False)
        )
        cleanup_namespaces.append(run.namespace)
        source = TopicSource(
            settings.kafka,
            topic,
            group_id=run.group_id,
            start=start,
            end=end,
            consumer_overrides=overrides,
        )
        try:
            runs.append(run.run(source))
        finally:
            source.close()

    first, second = runs
    assert first.status == second.status == "completed"
    assert first.counts.events == len(expected_ids) == first.counts.scored
    assert first.counts.alerts > 0, "the slice should raise alerts with the 5%-rate model"
    alerts_a = read_topic(settings.kafka, first.output_topic)
    alerts_b = read_topic(settings.kafka, second.output_topic)
    assert len(alerts_a) == first.counts.alerts
    # same partition, key, order and content (ids, scores, typologies, reasons, narratives)
    assert [without_wall_clock(m) for m in alerts_a] == [without_wall_clock(m) for m in alerts_b]
    assert len({orjson.loads(m.value())["alert_id"] for m in alerts_a}) == len(alerts_a)

    scores = [
        pq.read_table(settings.home / "runs" / m.run_id / "scores.parquet").drop_columns(
            list(WALL_CLOCK_COLUMNS)
        )
        for m in runs
    ]
    assert scores[0].equals(scores[1])
    assert set(scores[0].column("event_id").to_pylist()) == expected_ids
    times = scores[0].column("event_time").to_pylist()
    assert times == sorted(times)  # partitions merged by event time
    assert sum(a is not None for a in scores[0].column("alert_id").to_pylist()) == len(alerts_a)
    for manifest in runs:  # the namespaces were removed (no --keep-state)
        assert not manifest.state_kept
        assert next(redis_client.scan_iter(match=f"{manifest.namespace}:*"), None) is None


def test_a_replay_never_touches_live_redis_keys(
    replay_settings: Settings,
    stream_sim: Path,
    stream_slice: Callable[[str, str], list[bytes]],
    redis_client: redis.Redis[bytes],
    tmp_path: Path,
    cleanup_namespaces: list[str],
) -> None:
    settings = replay_settings
    live = settings.context.namespace
    values = stream_slice("2026-02-19T00:00:00Z", "2026-02-19T14:00:00Z")
    events = [decode(TransactionEvent, v) for v in values]
    truth = read_truth(stream_sim / "truth.jsonl")
    labels = analyst_dispositions(
        [e.event_id for e in events if truth[e.event_id].is_suspicious], truth, timedelta(hours=1)
    )
    assert labels, "the slice should hold suspicious events"

    # Live state for the very customers, counterparties and labels the replay will see.
    with ContextStore(
        connect(settings.redis), settings.context, create_namespace=True
    ) as live_store:
        live_store.update_batch(events)
        live_store.apply_labels(labels)
    redis_client.set(f"{live}:{{meta}}:note", b"live, no TTL")
    redis_client.set(f"{live}:{{meta}}:expiring", b"live, with TTL", ex=3600)

    run = prepare_replay(
        settings,
        ReplayOptions(
            run_id=run_id("iso"),
            batch_size=64,
            keep_state=True,  # keep it, to see where the run did write
            labels=LabelSchedule(labels, timedelta(0)),
            labels_source="test",
            progress=False,
        ),
    )
    cleanup_namespaces.append(run.namespace)
    own_prefix = f"{run.namespace}:"
    before = snapshot_redis(redis_client, exclude_prefix=own_prefix)
    assert any(key.startswith(f"{live}:".encode()) for key in before)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(values) + b"\n")
    manifest = run.run(FileSource(path))

    # nothing outside the run's namespace was written, expired, deleted or created
    assert snapshot_redis(redis_client, exclude_prefix=own_prefix) == before
    # ...while the run did keep context of its own for the same customers
    assert manifest.counts.scored == len(events)
    assert manifest.labels.revealed > 0
    for event in events[:20]:
        assert redis_client.exists(customer_base(run.namespace, event.customer_id) + ":s")
    assert manifest.state_kept


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **to_env(settings), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow  # two child processes that each load torch and the model: 25-50 s here
def test_replay_and_report_from_the_command_line(
    replay_settings: Settings,
    stream_sim: Path,
    stream_slice: Callable[[str, str], list[bytes]],
    redis_client: redis.Redis[bytes],
    tmp_path: Path,
    cleanup_namespaces: list[str],
) -> None:
    settings = replay_settings
    values = stream_slice("2026-02-18T00:00:00Z", "2026-02-18T14:00:00Z")
    events = [decode(TransactionEvent, v) for v in values]
    garbage = [b"not json at all", b'{"event_id": "half-an-event"}']
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([*values[:5], *garbage, *values[5:]]) + b"\n")
    truth = read_truth(stream_sim / "truth.jsonl")
    labels = analyst_dispositions(
        [e.event_id for e in events if truth[e.event_id].is_suspicious], truth, timedelta(hours=1)
    )
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_bytes(b"\n".join(lb.model_dump_json().encode() for lb in labels) + b"\n")
    delay = timedelta(hours=2)
    last_event = max(e.event_time for e in events)
    expected_revealed = sum(lb.label_time + delay <= last_event for lb in labels)
    name = run_id("cli")
    cleanup_namespaces.append(f"backtest-{name}")

    replayed = _cli(
        settings,
        "replay",
        "--file", str(path),
        "--labels", str(labels_path),
        "--label-delay", "2h",
        "--batch-size", "64",
        "--run-id", name,
        "--no-progress",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    folder = settings.home / "runs" / name
    manifest = RunManifest.read(folder)
    assert manifest.status == "completed"
    assert manifest.counts.events == len(events) + len(garbage)
    assert manifest.counts.dead_letters == len(garbage)
    assert manifest.labels.revealed == expected_revealed
    assert manifest.labels.reveal_delay_s == delay.total_seconds()
    assert next(redis_client.scan_iter(match=f"backtest-{name}:*"), None) is None
    dead = [orjson.loads(line) for line in read_jsonl(folder / "dead_letters.jsonl")]
    assert [d["source"] for d in dead] == [f"file:events.jsonl[0]@{n}" for n in (6, 7)]
    assert [base64.b64decode(d["value_b64"]) for d in dead] == garbage

    reported = _cli(
        settings, "backtest", "report", name, "--truth", str(stream_sim / "truth.jsonl")
    )
    assert reported.returncode == 0, reported.stderr
    report = orjson.loads((folder / "report" / "report.json").read_bytes())
    # the headline figures, recomputed straight from the run's alert file and the truth
    alerted = {
        orjson.loads(line)["event"]["event_id"] for line in read_jsonl(folder / "alerts.jsonl")
    }
    suspicious = {e.event_id for e in events if truth[e.event_id].is_suspicious}
    assert report["alerts"] == len(alerted) == manifest.counts.alerts
    assert report["events"] == len(events)
    assert report["suspicious"] == len(suspicious)
    if alerted:
        assert report["precision"] == pytest.approx(len(alerted & suspicious) / len(alerted))
    assert report["recall"] == pytest.approx(len(alerted & suspicious) / len(suspicious))
    assert report["latency_ms"]["emitted_to_landed"]["count"] == len(alerted)
    html = (folder / "report" / "report.html").read_text()
    images = [
        base64.b64decode(chunk.split('"', 1)[0])
        for chunk in html.split("data:image/png;base64,")[1:]
    ]
    assert len(images) == 4
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert name in reported.stdout

    listed = _cli(settings, "backtest", "list")
    run_line = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert "completed" in run_line
