"""Helpers for the trainer tests: labels, scored records and cases built from plain values."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message

from schemas import LabelEvent, LabelSource, Typology
from schemas.features import FEATURE_NAMES
from stream.pipeline.records import ScoredRecord
from stream.settings import KafkaSettings, Settings, to_env
from stream.trainer.cases import LabelledCase

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def event_dict(event_id: str, customer_id: str, at: datetime) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "customer_id": customer_id,
        "account_id": f"acct-{customer_id}",
        "channel": "card",
        "direction": "outbound",
        "amount_minor": 1234,
        "currency": "USD",
        "counterparty_id": "merchant-1",
        "counterparty_type": "merchant",
        "country": "US",
    }


def record(
    event_id: str,
    *,
    customer_id: str = "cust-1",
    at: datetime = T0,
    alerted: bool = False,
    score: float = 0.1,
    features: tuple[float, ...] | None = None,
    narrative: str = "card payment; amount typical",
    model_version: str = "v1",
) -> ScoredRecord:
    return ScoredRecord(
        event_id=event_id,
        customer_id=customer_id,
        event_time_ms=ms(at),
        event=event_dict(event_id, customer_id, at),
        narrative=narrative,
        clause_ids=("event", "amount_level"),
        features=features or tuple(float(i % 7) for i in range(len(FEATURE_NAMES))),
        score=score,
        typology="card_testing",
        model_version=model_version,
        narrative_version="n1",
        alert_id=f"alert-{event_id}" if alerted else None,
        scored_at_ms=ms(at),
        source="tx[0]@1",
    )


def label(
    event_id: str,
    *,
    suspicious: bool = True,
    customer_id: str = "cust-1",
    at: datetime = T0,
    after: timedelta = timedelta(days=1),
    source: LabelSource = LabelSource.ANALYST,
    label_id: str | None = None,
    typology: Typology = Typology.CARD_TESTING,
) -> LabelEvent:
    return LabelEvent(
        label_id=label_id or f"{source.value}-{event_id}",
        event_id=event_id,
        customer_id=customer_id,
        event_time=at,
        label_time=at + after,
        source=source,
        is_suspicious=suspicious,
        typology=typology if suspicious else Typology.LEGITIMATE,
        counterparty_id="merchant-1",
    )


def case(
    event_id: str,
    *,
    suspicious: bool = False,
    at: datetime = T0,
    source: str = "analyst",
    label_time: datetime | None = None,
    label_id: str | None = None,
) -> LabelledCase:
    return LabelledCase(
        label_id=label_id or f"{source}-{event_id}",
        event_id=event_id,
        customer_id="cust-1",
        source=source,
        is_suspicious=suspicious,
        typology="card_testing" if suspicious else "legitimate",
        event_time_ms=ms(at),
        label_time_ms=ms(label_time or at + timedelta(days=1)),
        event=event_dict(event_id, "cust-1", at),
        narrative="card payment",
        narrative_version="n1",
        clause_ids=("event",),
        features=tuple(0.0 for _ in FEATURE_NAMES),
        score=0.5,
        model_version="v1",
        alerted=suspicious,
    )


@pytest.fixture
def make_case() -> Callable[..., LabelledCase]:
    return case


@pytest.fixture
def make_record() -> Callable[..., ScoredRecord]:
    return record


@pytest.fixture
def make_label() -> Callable[..., LabelEvent]:
    return label


# -- processes and Kafka helpers for the end-to-end tests (the scorer's, adapted) ------------


@dataclass
class WorkerProcess:
    """`riskstream run <worker>` as a child process, logging to a file."""

    settings: Settings
    log_path: Path
    command: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **to_env(self.settings), "HF_HUB_OFFLINE": "1", **self.extra_env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", *self.command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout_s: float = 90) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(settings, "run", "scorer")``: a worker process, killed after the test."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings, *command: str, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = "-".join(command[1:2] or command)
        log_path = tmp_path / f"{name}-{len(started)}.log"
        started.append(WorkerProcess(settings, log_path, list(command), extra_env or {}).start())
        return started[-1]

    yield start
    for process in started:
        process.stop_quietly()


def consume_all(
    kafka: KafkaSettings,
    topic: str,
    *,
    until: Callable[[list[Message]], bool],
    timeout_s: float = 180,
) -> list[Message]:
    """Read ``topic`` from the beginning (no group commits) until ``until(messages)`` holds."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
            if until(messages):
                return messages
    finally:
        consumer.close()
    raise AssertionError(f"timed out reading {topic}: {len(messages)} messages so far")


def wait_for(probe: Callable[[], object], what: str, timeout_s: float = 300) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def simulate(out: Path, **config: Any) -> Path:
    from stream.simulate.config import build_config
    from stream.simulate.engine import simulate as run
    from stream.simulate.writers import write_files

    write_files(run(build_config(start_date="2026-02-15", seed=21, **config)), out, progress=False)
    return out


@pytest.fixture(scope="session")
def new_typology_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Traffic whose only fraud is card testing - the typology the session's tiny champion
    does not catch (recall 0 on its test days): labels about it are what a fine-tune can
    learn from, so the challenger is better for a reason, not by luck."""
    others = [
        "account_takeover", "stolen_card", "compromised_terminal", "structuring",
        "mule_fan_in_out", "round_tripping", "pass_through", "dormant_reactivation",
        "high_risk_jurisdiction",
    ]  # fmt: skip
    return simulate(
        tmp_path_factory.mktemp("new-typology-sim"),
        customers=150,
        days=8,
        prevalence=0.03,
        exclude=others,
        warmup_days=2,
    )


@pytest.fixture(scope="session")
def familiar_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Traffic with every typology, on which the session's champion does well (holdout
    ROC-AUC ~0.88): a challenger from random weights is certainly worse."""
    return simulate(
        tmp_path_factory.mktemp("familiar-sim"), customers=200, days=10, prevalence=0.05,
        warmup_days=2,
    )  # fmt: skip
