"""The scorer process on the real broker and Redis: the alerts it produces are the ones an
independent in-process computation expects, with every field; bad input goes to the DLQ with
its original bytes while good events flow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from models.inference import load_model
from models.reasons import FIGURES_REASON
from models.settings import ModelSettings
from schemas import Alert, TransactionEvent, alert_id_for, decode
from schemas.dead_letter import (
    H_ERROR,
    H_ERROR_TYPE,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    DeadLetterHeaders,
)
from schemas.score import Score
from stream.context.store import ContextStore
from stream.redis_client import connect
from stream.scorer.app import narrator_for
from stream.settings import ContextSettings, RedisSettings, Settings
from tests.helpers import produce_values, read_jsonl

from .conftest import ScorerProcess, consume_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def with_transactions(settings: Settings, topic: str) -> Settings:
    return settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"transactions": topic})}
    )


def test_events_in_expected_alerts_out_with_every_field(
    scorer_settings: Settings,
    stream_sim: Path,
    start_scorer: Callable[..., ScorerProcess],
    new_topic: Callable[..., str],
    redis_settings: RedisSettings,
    trained_registry: Path,
) -> None:
    # One partition: the reference below then sees the events in the scorer's order, so even
    # counterparty context (which depends on cross-customer order) must match exactly.
    settings = with_transactions(scorer_settings, new_topic(1, "tx"))
    values = read_jsonl(stream_sim / "events.jsonl")[:900]
    events = [decode(TransactionEvent, v) for v in values]
    produce_values(settings.kafka, settings.topics.transactions, values)

    scorer = start_scorer(settings)
    score_messages = consume_all(
        settings.kafka,
        settings.topics.scores,
        until=lambda ms: len({orjson.loads(m.value())["event_id"] for m in ms}) >= len(events),
    )
    scores = {s["event_id"]: s for s in (orjson.loads(m.value()) for m in score_messages)}
    for message in score_messages:  # every score message is a valid Score (its JSON Schema)
        decode(Score, message.value())
    expected_alerts = sum(1 for s in scores.values() if s["alerted"])
    alert_messages = consume_all(
        settings.kafka, settings.topics.alerts, until=lambda ms: len(ms) >= expected_alerts
    )
    assert scorer.terminate() == 0, scorer.log()

    # The reference: same model, same context code, a fresh namespace, one big batch.
    model = load_model(ModelSettings(registry_dir=trained_registry))
    namespace = settings.context.namespace + "-ref"
    store = ContextStore(
        connect(redis_settings), ContextSettings(namespace=namespace), create_namespace=True
    )
    narrate = narrator_for(model)
    contexts = store.update_batch(events)
    narratives = [narrate(e, c) for e, c in zip(events, contexts, strict=True)]
    features = np.asarray([n.features for n in narratives], dtype=np.float32)
    reference = model.predict_batch([n.text for n in narratives], features)
    store.drop_namespace()

    assert set(scores) == {e.event_id for e in events}
    threshold = model.alert_threshold
    for event, ref_score in zip(events, reference.scores, strict=True):
        streamed = scores[event.event_id]
        assert streamed["score"] == pytest.approx(float(ref_score), abs=1e-4)
        assert streamed["model_version"] == model.version
        if abs(float(ref_score) - threshold) > 1e-4:
            assert streamed["alerted"] == (float(ref_score) >= threshold)

    alerts = [decode(Alert, m.value()) for m in alert_messages]
    assert expected_alerts > 0, "the test model should alert on a few percent of events"
    assert len({a.alert_id for a in alerts}) == expected_alerts
    by_id = {e.event_id: (e, n) for e, n in zip(events, narratives, strict=True)}
    for message, alert in zip(alert_messages, alerts, strict=True):
        event, narrative = by_id[alert.event.event_id]
        assert message.key() == event.customer_id.encode()
        assert alert.event == event
        assert alert.alert_id == alert_id_for(event.event_id, model.version)
        assert alert.mode == "live"
        assert alert.model_version == model.version
        assert alert.narrative_version == narrative.version
        assert alert.narrative == narrative.text
        assert alert.threshold == pytest.approx(threshold)
        assert alert.score >= threshold
        assert alert.typology.value != "legitimate"
        clause_ids = {c.id for c in narrative.clauses}
        assert alert.reasons, "an alert always says why"
        for reason in alert.reasons:
            assert reason.weight > 0
            if reason.clause == FIGURES_REASON:  # only the numeric context explains it
                assert alert.reasons == [reason]
                continue
            assert reason.clause in clause_ids
            assert reason.text in alert.narrative
        assert alert.event_time == event.event_time
        assert alert.received_at <= alert.scored_at <= alert.emitted_at


def test_bad_input_goes_to_the_dlq_with_its_bytes_while_good_events_flow(
    scorer_settings: Settings,
    stream_sim: Path,
    start_scorer: Callable[..., ScorerProcess],
) -> None:
    settings = scorer_settings
    good = read_jsonl(stream_sim / "events.jsonl")[:200]
    first = orjson.loads(good[0])
    # A message reusing the id of a recent event (ids are remembered for a bounded span of the
    # customer's event time; see docs/context.md): the last good one.
    last = orjson.loads(good[-1])
    bad: dict[str, bytes] = {
        "missing field": orjson.dumps({k: v for k, v in first.items() if k != "amount_minor"}),
        "wrong type": orjson.dumps({**first, "event_id": "bad-1", "amount_minor": "12.50"}),
        "negative amount": orjson.dumps({**first, "event_id": "bad-2", "amount_minor": -5}),
        "NaN": good[0].replace(b'"amount_minor":', b'"amount_minor":NaN,"x":'),
        "unknown currency": orjson.dumps({**first, "event_id": "bad-3", "currency": "ZZZ"}),
        "not JSON": b"\x00\x01 definitely not json",
        "non-UTF-8": b'{"event_id": "\xc3\x28"}',
        "empty": b"",
        "reused event id": orjson.dumps({**last, "amount_minor": last["amount_minor"] + 1}),
    }
    expected_reason = {
        "missing field": "field 'amount_minor': Field required",
        "wrong type": "field 'amount_minor'",
        "negative amount": "greater than 0",
        "NaN": "not valid JSON",
        "unknown currency": "unknown ISO 4217 currency code 'ZZZ'",
        "not JSON": "not valid JSON",
        "non-UTF-8": "not valid JSON",
        "empty": "empty message",
        "reused event id": f"duplicate event_id '{last['event_id']}'",
    }
    producer = Producer(settings.kafka.client_config())
    topic = settings.topics.transactions
    # The good events first (the reused id must come after its original), then the bad ones,
    # each with a header of its own that the DLQ must keep.
    produce_values(settings.kafka, topic, good)
    for name, value in bad.items():
        # The reuse is keyed like its original, so it lands behind it on the same partition:
        # which of two messages with one id is "first" is only defined within a partition.
        key = last["customer_id"].encode() if name == "reused event id" else b"cust-bad"
        producer.produce(topic, key=key, value=value, headers=[("case", name.encode())])
    assert producer.flush(30) == 0

    scorer = start_scorer(settings)
    dead = consume_all(settings.kafka, settings.topics.dlq, until=lambda ms: len(ms) >= len(bad))
    scored = consume_all(
        settings.kafka,
        settings.topics.scores,
        until=lambda ms: len({orjson.loads(m.value())["event_id"] for m in ms}) >= len(good),
    )
    assert scorer.terminate() == 0, scorer.log()

    assert {orjson.loads(m.value())["event_id"] for m in scored} == {
        orjson.loads(v)["event_id"] for v in good
    }
    assert len(dead) == len(bad)
    for message in dead:
        headers = dict(message.headers() or [])
        case = headers["case"].decode()
        assert (message.value() or b"") == bad[case], case
        assert expected_reason[case] in headers[H_ERROR].decode(), (case, headers[H_ERROR])
        assert headers[H_ERROR_TYPE] in (b"invalid_event", b"duplicate_event_id")
        assert headers[H_SOURCE_TOPIC].decode() == topic
        typed = DeadLetterHeaders.from_kafka(message.headers() or [])
        assert (typed.source_topic, typed.error_type) == (topic, headers[H_ERROR_TYPE].decode())
        source = read_at(
            settings, topic, int(headers[H_SOURCE_PARTITION]), int(headers[H_SOURCE_OFFSET])
        )
        assert (source or b"") == (message.value() or b""), "the source headers point at the input"
    assert "Traceback" not in scorer.log()


def read_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes | None:
    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": "peek", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        message = consumer.poll(10)
        assert message is not None
        assert message.error() is None
        assert message.offset() == offset
        return message.value()
    finally:
        consumer.close()


def test_exactly_once_mode_scores_everything_once_for_a_read_committed_reader(
    scorer_settings: Settings, stream_sim: Path, start_scorer: Callable[..., ScorerProcess]
) -> None:
    settings = scorer_settings
    values = read_jsonl(stream_sim / "events.jsonl")[:600]
    expected = {orjson.loads(v)["event_id"] for v in values}
    produce_values(settings.kafka, settings.topics.transactions, values)
    scorer = start_scorer(settings, "--delivery", "exactly_once")
    scores = consume_all(
        settings.kafka,
        settings.topics.scores,
        until=lambda ms: {orjson.loads(m.value())["event_id"] for m in ms} >= expected,
    )
    assert scorer.terminate() == 0, scorer.log()
    assert "exactly_once" in scorer.log()
    ids = [orjson.loads(m.value())["event_id"] for m in scores]
    assert sorted(ids) == sorted(expected), "each event's score is committed exactly once"
