"""`riskstream run analyst` on the real broker: alerts in, dispositions from the truth out.

Alerts are built from the events of a real simulation (some of them fraud, some not), with
the traps a live topic holds: an alert delivered twice, an event alerted again by a newer
model, an alert about an event the truth does not know, a shadow alert and bytes that are not
an alert. The desk must send exactly one disposition per live alerted event it knows, with
the alert id, the truth's verdict and a review time in event time; and a restarted desk must
send nothing again (offsets committed only after the dispositions were acknowledged)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from schemas import (
    Alert,
    LabelEvent,
    LabelSource,
    TransactionEvent,
    Typology,
    alert_id_for,
    decode,
    encode,
)
from stream.settings import Settings, to_env
from stream.simulate.truth import read_truth

pytestmark = [pytest.mark.integration]


def _alert(event: TransactionEvent, version: str, mode: str = "live") -> Alert:
    return Alert(
        alert_id=alert_id_for(event.event_id, version),
        mode=mode,  # type: ignore[arg-type]
        event=event,
        score=0.9,
        threshold=0.5,
        typology=Typology.CARD_TESTING,
        typology_probability=0.5,
        reasons=[],
        narrative="a payment",
        model_version=version,
        narrative_version="n",
        event_time=event.event_time,
        received_at=event.event_time,
        scored_at=event.event_time,
        emitted_at=event.event_time,
    )


def _produce(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(settings.kafka.client_config())
    for key, value in values:
        producer.produce(settings.topics.alerts, value=value, key=key)
    assert producer.flush(30) == 0


def _labels(settings: Settings, at_least: int, timeout_s: float = 90) -> list[LabelEvent]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.labels])
    found: list[LabelEvent] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(found) < at_least:
            for message in consumer.consume(100, timeout=0.5):
                if message.error() is None:
                    found.append(decode(LabelEvent, message.value()))
        # a little longer, to see anything sent beyond what was expected
        for message in consumer.consume(100, timeout=3):
            if message.error() is None:
                found.append(decode(LabelEvent, message.value()))
    finally:
        consumer.close()
    return found


def _run_desk(settings: Settings, truth: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", "analyst", "--truth", str(truth),
             "--delay", "4h", "--flush-after-s", "2", "--group-id", "desk-under-test"],
            env={**os.environ, **to_env(settings)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _stop(desk: subprocess.Popen[bytes]) -> int:
    desk.send_signal(signal.SIGTERM)
    return desk.wait(timeout=60)


def test_the_desk_dispositions_each_known_alert_once_from_the_truth(
    test_settings: Settings, training_sim: Path, tmp_path: Path
) -> None:
    settings = test_settings
    truth_path = training_sim / "truth.jsonl"
    truth = read_truth(truth_path)
    lines = [line for line in (training_sim / "events.jsonl").read_bytes().splitlines() if line]
    events = [decode(TransactionEvent, line) for line in lines]
    fraud = [e for e in events if truth[e.event_id].is_suspicious][:6]
    legit = [e for e in events if not truth[e.event_id].is_suspicious][:6]
    alerted = fraud + legit
    stranger = legit[0].model_copy(update={"event_id": "not-simulated"})
    values = [(e.customer_id.encode(), encode(_alert(e, "m1"))) for e in alerted]
    values += [
        values[0],  # the same alert delivered twice
        # the same event alerted by a newer model: keyed by customer as the scorer keys alerts,
        # so it comes after the first in the same partition (another key could be read first)
        (alerted[1].customer_id.encode(), encode(_alert(alerted[1], "m2"))),
        (b"k", encode(_alert(stranger, "m1"))),
        (b"k", encode(_alert(fraud[2], "m1", mode="shadow"))),
        (b"k", b"not an alert"),
    ]
    _produce(settings, values)

    desk = _run_desk(settings, truth_path, tmp_path / "desk.log")
    try:
        labels = _labels(settings, at_least=len(alerted))
    finally:
        code = _stop(desk)
    log = (tmp_path / "desk.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log
    assert sorted(lb.event_id for lb in labels) == sorted(e.event_id for e in alerted)
    for label in labels:
        event = next(e for e in alerted if e.event_id == label.event_id)
        assert label.label_id == f"an-{event.event_id}"
        assert label.source is LabelSource.ANALYST
        assert label.is_suspicious == truth[event.event_id].is_suspicious
        assert label.typology == truth[event.event_id].typology
        assert label.alert_id == alert_id_for(event.event_id, "m1")
        assert label.label_time == event.event_time + timedelta(hours=4)
    assert "event not-simulated is not in" in log
    assert f"{len(fraud)} true positives, {len(legit)} false positives" in log

    # A restarted desk has nothing left to do: every alert was committed after its label.
    again = _run_desk(settings, truth_path, tmp_path / "desk-again.log")
    time.sleep(8)
    assert _stop(again) == 0
    assert len(_labels(settings, at_least=len(alerted))) == len(alerted)
    assert "0 dispositions sent" in (tmp_path / "desk-again.log").read_text()


def test_the_desk_is_listed_with_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "analyst", "--help"],
        capture_output=True, check=True, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    text = done.stdout.decode()
    for option in ("--truth", "--delay", "--flush-after-s"):
        assert option in text
    assert orjson.dumps(text)  # printable
