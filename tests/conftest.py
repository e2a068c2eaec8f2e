"""Shared fixtures: a real Kafka broker and a real redis-server for the whole session.

Both are started here (jars from Maven Central, Debian's redis-server) unless the environment
brings its own: ``RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS`` names an existing cluster and
``REDIS_URL`` an existing Redis. Every test gets its own topics, consumer group and Redis key
namespace, so tests never see each other's data. Nothing here mocks Kafka or Redis.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from models.settings import ModelSettings
from stream.devenv import (
    KafkaBroker,
    RedisServer,
    ensure_kafka_jars,
    ensure_redis_server_binary,
    ensure_topics,
    free_ports,
    kafka_version,
    resolve_redis_url,
)
from stream.settings import ContextSettings, KafkaSettings, RedisSettings, Settings, TopicSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
BYO_KAFKA_ENV = "RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS"
# A registry with a trained champion to use instead of training one (local iteration only;
# CI always trains, so the model under test matches the code under test).
PREBUILT_REGISTRY_ENV = "RISKSTREAM_TEST_PREBUILT_REGISTRY"


@dataclass
class _Infrastructure:
    """What the session ran against; printed at the end so CI logs show real servers ran."""

    lines: list[str] = field(default_factory=list)


_INFRA = _Infrastructure()


def _process_line(pid: int | None, expected: str) -> str:
    if pid is None:
        return "no pid"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return f"pid {pid} (gone)"
    found = "yes" if expected in cmdline else "NO"
    return f"pid {pid}, '{expected}' in its command line: {found}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- Kafka -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker | None]:
    """The session's broker, or None when the environment brings its own cluster."""
    if os.environ.get(BYO_KAFKA_ENV):
        _INFRA.lines.append(f"kafka: bring-your-own at {os.environ[BYO_KAFKA_ENV]}")
        yield None
        return
    libs = ensure_kafka_jars(Settings().home)  # where `riskstream dev install` put them
    port, controller_port = free_ports(2)
    broker = KafkaBroker(
        tmp_path_factory.mktemp("kafka"), libs, port=port, controller_port=controller_port
    )
    with broker:
        _INFRA.lines.append(
            f"kafka: Apache Kafka {kafka_version()} kafka.Kafka JVM at {broker.bootstrap_servers}"
            f" ({_process_line(broker.pid, 'kafka.Kafka')})"
        )
        yield broker


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: KafkaBroker | None) -> KafkaSettings:
    if kafka_broker is None:
        return Settings().kafka  # reads RISKSTREAM_KAFKA__* (security options included)
    return kafka_broker.kafka_settings()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_settings: KafkaSettings) -> str:
    return kafka_settings.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_admin(kafka_settings: KafkaSettings) -> AdminClient:
    return AdminClient(kafka_settings.client_config())


@pytest.fixture
def new_topic(
    kafka_settings: KafkaSettings, kafka_broker: KafkaBroker | None, kafka_admin: AdminClient
) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=1, prefix="t")`` creates a uniquely named topic."""
    created: list[str] = []

    def create(partitions: int = 1, prefix: str = "t") -> str:
        name = unique(prefix)
        ensure_topics(kafka_settings, {name: partitions})
        created.append(name)
        return name

    yield create
    if kafka_broker is None and created:  # a shared cluster: leave it as we found it
        for future in kafka_admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def group_id() -> str:
    return unique("group")


# -- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The session's redis-server, or None when REDIS_URL names a reachable one."""
    external = resolve_redis_url()
    if external is not None:
        _INFRA.lines.append("redis: bring-your-own at $REDIS_URL")
        yield None
        return
    (port,) = free_ports(1)
    server = RedisServer(
        port, tmp_path_factory.mktemp("redis"), binary=ensure_redis_server_binary()
    )
    with server:
        version = server.client().info("server")["redis_version"]
        _INFRA.lines.append(
            f"redis: redis-server {version} at {server.url}"
            f" ({_process_line(server.pid, 'redis-server')})"
        )
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    if redis_server is None:
        url = resolve_redis_url()
        assert url is not None, "REDIS_URL stopped answering"
        return url
    return redis_server.url


@pytest.fixture(scope="session")
def redis_settings(redis_server: RedisServer | None, redis_url: str) -> RedisSettings:
    return redis_server.redis_settings() if redis_server else RedisSettings(url=redis_url)


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted afterwards."""
    namespace = unique("test")
    yield namespace
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    with client:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    with client:
        yield client


# -- Settings --------------------------------------------------------------------------------


@pytest.fixture
def test_settings(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    redis_namespace: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
) -> Settings:
    """Settings aimed at the test broker and Redis, with this test's own topics and namespace."""
    topics = TopicSettings(
        transactions=new_topic(3, "transactions"),
        dlq=new_topic(1, "dlq"),
        alerts=new_topic(3, "alerts"),
        alerts_shadow=new_topic(1, "alerts-shadow"),
        scores=new_topic(1, "scores"),
        labels=new_topic(1, "labels"),
        models=new_topic(1, "models"),
    )
    return Settings(
        home=tmp_path / "home",
        kafka=kafka_settings,
        redis=redis_settings,
        topics=topics,
        context=ContextSettings(namespace=redis_namespace),
        model=ModelSettings(registry_dir=tmp_path / "registry"),
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _INFRA.lines:
        terminalreporter.section("real infrastructure used by integration tests")
        for line in _INFRA.lines:
            terminalreporter.write_line(line)


# -- Data and a trained model (shared by scorer, trainer, replay and reliability tests) ------


def simulate_to(
    out: Path, *, customers: int, days: int, seed: int, start_date: str, **extra: object
) -> Path:
    """Run the real simulator into ``out`` (events, labels, truth as JSONL)."""
    from stream.simulate.config import build_config
    from stream.simulate.engine import simulate
    from stream.simulate.writers import write_files

    config = build_config(customers=customers, days=days, seed=seed, start_date=start_date, **extra)
    write_files(simulate(config), out, progress=False)
    return out


@pytest.fixture(scope="session")
def training_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small labelled traffic to train the session's model on. Prevalence is raised from the
    realistic 0.5% so a few hundred training steps see every typology."""
    return simulate_to(
        tmp_path_factory.mktemp("training-sim"),
        customers=300,
        days=30,
        seed=11,
        start_date="2026-01-01",
        prevalence=0.03,
    )


@pytest.fixture(scope="session")
def stream_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Later traffic of another population: what the tests stream through the scorer."""
    return simulate_to(
        tmp_path_factory.mktemp("stream-sim"),
        customers=120,
        days=6,
        seed=12,
        start_date="2026-02-15",
        prevalence=0.03,
    )


@pytest.fixture(scope="session")
def trained_registry(
    tmp_path_factory: pytest.TempPathFactory, training_sim: Path, redis_settings: RedisSettings
) -> Path:
    """A registry whose champion is a tiny student trained on ``training_sim`` with the real
    context store and narratives. Thresholds target a 5% alert rate so tests see alerts."""
    from models.registry import Registry
    from models.train_config import preset
    from models.workflow import Targets, train_and_register
    from stream.datasets import build_split

    root = tmp_path_factory.mktemp("registry")
    prebuilt = os.environ.get(PREBUILT_REGISTRY_ENV)
    if prebuilt:  # a developer iterating on one test: skip the session's training
        shutil.copytree(prebuilt, root, dirs_exist_ok=True)
        return root
    settings = Settings(
        redis=redis_settings,
        context=ContextSettings(namespace=unique("train")),
        model=ModelSettings(registry_dir=root),
    )
    split = build_split(training_sim, settings, progress=False)
    registry = Registry(root)
    run = train_and_register(
        split,
        preset("tiny", seed=1),
        registry,
        targets=Targets(alert_rate=0.05),
        name="tiny",
        progress=False,
    )
    assert run.version is not None
    registry.promote(run.version, reason="session fixture")
    return root
