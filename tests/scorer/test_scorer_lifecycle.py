"""Scorer processes under real-world events: sharing work, being killed, being stopped, and a
model promotion in the middle of a stream. Every input event is accounted for each time."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from models.registry import Registry
from schemas import Alert, alert_id_for, decode
from stream.kafka.model_notices import announce_champion
from stream.settings import Settings
from tests.helpers import event_ids, produce_values, read_jsonl

from .conftest import ScorerProcess, consume_all, until_quiet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def scored_ids(messages: list[Message]) -> list[str]:
    return [orjson.loads(m.value())["event_id"] for m in messages]


def wait_for_log(process: ScorerProcess, pattern: str, timeout_s: float = 90) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, process.log())
        if found:
            return found
        assert process.process is not None
        assert process.process.poll() is None, process.log()
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in the log:\n{process.log()}")


def all_scored(expected: set[str]) -> Callable[[list[Message]], bool]:
    return lambda messages: expected <= set(scored_ids(messages))


def test_two_scorers_share_the_work_and_a_kill_9_of_one_loses_nothing(
    scorer_settings: Settings, stream_sim: Path, start_scorer: Callable[..., ScorerProcess]
) -> None:
    settings = scorer_settings
    values = read_jsonl(stream_sim / "events.jsonl")[:1500]
    expected = set(event_ids(values))

    first = start_scorer(settings, name="first")
    wait_for_log(first, r"assigned \[\d")
    second = start_scorer(settings, name="second")
    # Cooperative rebalancing hands the newcomer some partitions; wait until it has them.
    wait_for_log(second, r"assigned \[\d")
    produce_values(settings.kafka, settings.topics.transactions, values)

    consume_all(settings.kafka, settings.topics.scores, until=lambda ms: len(ms) >= 300)
    first.kill()  # SIGKILL mid-stream: no flush, no commit, no goodbye to the group
    scores = consume_all(settings.kafka, settings.topics.scores, until=all_scored(expected))
    assert second.terminate() == 0, second.log()

    ids = scored_ids(scores)
    assert set(ids) == expected, "every event scored, by one scorer or the other"
    assert re.search(r"assigned \[\d", first.log())
    assert re.search(r"assigned \[\d", second.log())
    # At-least-once: what the killed scorer did but never committed is done again; repeats
    # are allowed, and a repeated alert carries the same id.
    alerts = [
        decode(Alert, m.value())
        for m in consume_all(
            settings.kafka, settings.topics.alerts, until=until_quiet(), timeout_s=60
        )
    ]
    for alert in alerts:
        assert alert.alert_id == alert_id_for(alert.event.event_id, alert.model_version)


def committed_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": settings.scorer.group_id})
    try:
        partitions = [TopicPartition(settings.topics.transactions, p) for p in range(3)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def input_positions(settings: Settings) -> dict[str, tuple[int, int]]:
    """event id -> (partition, offset) of every input message."""
    messages = consume_all(
        settings.kafka, settings.topics.transactions, until=until_quiet(), timeout_s=60
    )
    return {orjson.loads(m.value())["event_id"]: (m.partition(), m.offset()) for m in messages}


def test_sigterm_finishes_the_batch_commits_exactly_what_was_scored_and_exits_0(
    scorer_settings: Settings, stream_sim: Path, start_scorer: Callable[..., ScorerProcess]
) -> None:
    settings = scorer_settings
    values = read_jsonl(stream_sim / "events.jsonl")[:1500]
    produce_values(settings.kafka, settings.topics.transactions, values)
    scorer = start_scorer(settings)
    consume_all(settings.kafka, settings.topics.scores, until=lambda ms: len(ms) >= 200)
    started = time.monotonic()
    assert scorer.terminate(timeout_s=settings.scorer.shutdown_timeout_s) == 0, scorer.log()
    assert time.monotonic() - started < settings.scorer.shutdown_timeout_s

    committed = committed_offsets(settings)
    positions = input_positions(settings)
    below_commit = {i for i, (p, o) in positions.items() if o < committed.get(p, 0)}
    scores = consume_all(settings.kafka, settings.topics.scores, until=until_quiet(), timeout_s=60)
    # Drained: everything scored is committed, everything committed is scored, nothing twice.
    assert set(scored_ids(scores)) == below_commit
    assert len(scores) == len(below_commit)

    restarted = start_scorer(settings, name="restarted")
    expected = set(event_ids(values))
    scores = consume_all(settings.kafka, settings.topics.scores, until=all_scored(expected))
    assert restarted.terminate() == 0, restarted.log()
    assert len(scores) == len(expected), "a graceful stop leaves nothing to redo"


def test_a_promotion_mid_stream_switches_versions_between_batches_with_no_event_lost(
    scorer_settings: Settings,
    stream_sim: Path,
    start_scorer: Callable[..., ScorerProcess],
    tmp_path: Path,
) -> None:
    registry_dir = tmp_path / "registry"
    shutil.copytree(scorer_settings.model.registry_dir, registry_dir)
    settings = scorer_settings.model_copy(
        update={"model": scorer_settings.model.model_copy(update={"registry_dir": registry_dir})}
    )
    registry = Registry(registry_dir)
    v1 = registry.champion()
    assert v1 is not None
    stored = registry.load(v1)
    v2 = registry.save(
        model=stored.model,
        tokenizer=stored.tokenizer,
        narrative_spec=stored.narrative_spec,
        training=stored.training.model_copy(update={"parent_version": v1}),
        metrics=stored.metrics,
        thresholds=stored.thresholds,
        name="second",
    )
    values = read_jsonl(stream_sim / "events.jsonl")[:1200]
    before, after = values[:600], values[600:]

    scorer = start_scorer(settings)
    produce_values(settings.kafka, settings.topics.transactions, before)
    consume_all(settings.kafka, settings.topics.scores, until=all_scored(set(event_ids(before))))
    registry.promote(v2, reason="test")
    announce_champion(settings, v2, "promote", "test")
    wait_for_log(scorer, rf"now scoring with model {re.escape(v2)}")
    produce_values(settings.kafka, settings.topics.transactions, after)
    expected = set(event_ids(values))
    scores = consume_all(settings.kafka, settings.topics.scores, until=all_scored(expected))
    assert scorer.terminate() == 0, scorer.log()

    version_of = {
        s["event_id"]: s["model_version"] for s in (orjson.loads(m.value()) for m in scores)
    }
    assert set(version_of) == expected
    assert {version_of[i] for i in event_ids(before)} == {v1}
    assert {version_of[i] for i in event_ids(after)} == {v2}
    alerts = [
        decode(Alert, m.value())
        for m in consume_all(
            settings.kafka, settings.topics.alerts, until=until_quiet(), timeout_s=60
        )
    ]
    for alert in alerts:
        assert alert.model_version == version_of[alert.event.event_id]
