"""Fixtures of the reliability suite: servers of its own to break, scorer processes, events.

Fault tests stop, pause and restart servers, so they never touch the session's broker and
Redis (other tests share those): ``fault_broker`` and ``fault_redis`` are started per module.
The Redis runs with AOF, as production Redis does (docker-compose.yml), so stopping it for a
while loses nothing; a Redis that comes back empty is a different fault, handled by the
context store's marker (``ContextStateLost``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.devenv import (
    KafkaBroker,
    RedisServer,
    ensure_kafka_jars,
    ensure_redis_server_binary,
    free_ports,
)
from stream.settings import load_settings
from tests.helpers import read_jsonl

from .harness import ScorerStarter


@pytest.fixture(scope="module")
def kafka_libs() -> Path:
    return ensure_kafka_jars(load_settings().home)


@pytest.fixture(scope="module")
def fault_broker(
    tmp_path_factory: pytest.TempPathFactory, kafka_libs: Path
) -> Iterator[KafkaBroker]:
    """A broker of this module's own, free to be restarted and paused."""
    port, controller_port = free_ports(2)
    broker = KafkaBroker(
        tmp_path_factory.mktemp("fault-kafka"),
        kafka_libs,
        port=port,
        controller_port=controller_port,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.resume()  # never leave a paused JVM behind, whatever a failed test did
        broker.stop()


@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own, with AOF: stop + start keeps the context."""
    (port,) = free_ports(1)
    server = RedisServer(
        port,
        tmp_path_factory.mktemp("fault-redis"),
        binary=ensure_redis_server_binary(),
        appendonly=True,
    )
    server.start()
    try:
        yield server
    finally:
        server.resume()
        server.stop()


@pytest.fixture
def start_scorer(tmp_path: Path) -> Iterator[ScorerStarter]:
    starter = ScorerStarter(tmp_path)
    yield starter
    starter.close()


@pytest.fixture(scope="session")
def stream_values(stream_sim: Path) -> list[bytes]:
    """The simulated stream's events as produced bytes, in event-time order."""
    return read_jsonl(stream_sim / "events.jsonl")
