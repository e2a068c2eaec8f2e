"""Alerts to publish in `alerts tail` tests, and the tail command as a real child process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from schemas import (
    Alert,
    Channel,
    CounterpartyType,
    Direction,
    Reason,
    TransactionEvent,
    Typology,
    alert_id_for,
    encode,
)
from stream.settings import KafkaSettings, Settings, to_env

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = REPO_ROOT / "schemas" / "jsonschema" / "alert.schema.json"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def make_alert(
    n: int,
    *,
    score: float,
    typology: Typology,
    customer: str,
    currency: str = "EUR",
    amount_minor: int = 125_000,
) -> Alert:
    event_time = T0 + timedelta(minutes=n)
    event = TransactionEvent(
        event_id=f"ev-{n:04d}",
        event_time=event_time,
        customer_id=customer,
        account_id=f"acc-{customer}",
        channel=Channel.WIRE,
        direction=Direction.OUTBOUND,
        amount_minor=amount_minor,
        currency=currency,
        counterparty_id=f"acc-ext-{n}",
        counterparty_type=CounterpartyType.ACCOUNT,
        country="AE",
    )
    return Alert(
        alert_id=alert_id_for(event.event_id, "m-test"),
        mode="live",
        event=event,
        score=score,
        threshold=0.5,
        typology=typology,
        typology_probability=0.61,
        reasons=[
            Reason(clause="amount", text="a transfer far above their usual amounts", weight=0.31),
            Reason(clause="country", text="to a high-risk jurisdiction", weight=0.12),
        ],
        narrative="A retail customer sends a transfer far above their usual amounts.",
        model_version="m-test",
        narrative_version="n-test",
        event_time=event_time,
        received_at=event_time + timedelta(milliseconds=40),
        scored_at=event_time + timedelta(milliseconds=90),
        emitted_at=event_time + timedelta(milliseconds=95),
    )


def produce(
    kafka: KafkaSettings, topic: str, values: list[bytes], *, timestamp_ms: int | None = None
) -> None:
    producer = Producer({**kafka.client_config(), "enable.idempotence": True})
    for value in values:
        key = b"invalid"
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            key = orjson.loads(value)["event"]["customer_id"].encode()
        if timestamp_ms is None:
            producer.produce(topic, value=value, key=key)
        else:
            producer.produce(topic, value=value, key=key, timestamp=timestamp_ms)
    assert producer.flush(30) == 0


def encoded(alerts: list[Alert]) -> list[bytes]:
    return [encode(alert) for alert in alerts]


def tail_args(topic: str, *args: str, idle_timeout: float = 4.0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stream.cli",
        "alerts",
        "tail",
        "--topic",
        topic,
        "--idle-timeout",
        str(idle_timeout),
        *args,
    ]


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **to_env(settings)}


@pytest.fixture
def run_tail(test_settings: Settings) -> Callable[..., tuple[bytes, str]]:
    """Run `riskstream alerts tail` to completion; returns (stdout bytes, stderr text)."""

    def run(topic: str, *args: str, idle_timeout: float = 4.0) -> tuple[bytes, str]:
        done = subprocess.run(
            tail_args(topic, *args, idle_timeout=idle_timeout),
            env=child_env(test_settings),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout, done.stderr.decode(errors="replace")

    return run
