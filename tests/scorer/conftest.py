"""Helpers to run real scorer processes against the session's broker and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message

from stream.devenv import free_ports
from stream.settings import KafkaSettings, ScorerSettings, Settings, to_env


@dataclass
class ScorerProcess:
    """`riskstream run scorer` as a child process, logging to a file."""

    settings: Settings
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ScorerProcess:
        env = {**os.environ, **to_env(self.settings), "HF_HUB_OFFLINE": "1"}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", "scorer", *self.extra_args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def scorer_settings(test_settings: Settings, trained_registry: Path) -> Settings:
    """Test settings plus: the trained registry, every score emitted (for accounting), small
    batches, a free metrics port."""
    (port,) = free_ports(1)
    return test_settings.model_copy(
        update={
            "model": test_settings.model.model_copy(update={"registry_dir": trained_registry}),
            "scorer": ScorerSettings(
                group_id=f"scorer-{test_settings.context.namespace}",
                batch_max_size=64,
                batch_max_wait_ms=20,
                emit_scores=True,
                metrics_port=port,
                shutdown_timeout_s=30,
            ),
        }
    )


@pytest.fixture
def start_scorer(tmp_path: Path) -> Iterator[Callable[..., ScorerProcess]]:
    started: list[ScorerProcess] = []

    def start(settings: Settings, *args: str, name: str = "scorer") -> ScorerProcess:
        # Each process binds its own metrics port, as replicas in separate containers would.
        (port,) = free_ports(1)
        own = settings.model_copy(
            update={"scorer": settings.scorer.model_copy(update={"metrics_port": port})}
        )
        process = ScorerProcess(own, tmp_path / f"{name}-{len(started)}.log", list(args))
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop_quietly()


def until_quiet(seconds: float = 3.0) -> Callable[[list[Message]], bool]:
    """An ``until`` for consume_all that holds once no new message came for ``seconds``: the
    whole of a topic nothing writes to any more (``lambda ms: True`` stops after the first
    fetch, at most 500 messages, or fewer if the broker is slow to hand them over)."""
    seen, since = -1, time.monotonic()

    def quiet(messages: list[Message]) -> bool:
        nonlocal seen, since
        if len(messages) != seen:
            seen, since = len(messages), time.monotonic()
        return time.monotonic() - since >= seconds

    return quiet


def consume_all(
    kafka: KafkaSettings,
    topic: str,
    *,
    until: Callable[[list[Message]], bool],
    timeout_s: float = 120,
) -> list[Message]:
    """Read `topic` from the beginning (no group commits) until `until(messages)` holds."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
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
