"""The real local Kafka broker and redis-server of ``stream.devenv``.

One broker serves the whole module (a JVM start costs seconds); tests that stop or break a
broker get their own. Every test uses its own topic and consumer group, so order does not
matter, except that the restart tests leave the shared broker running again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from stream.devenv import cli, jars
from stream.devenv.certs import generate_tls_files
from stream.devenv.errors import DevEnvError, JarResolveError, PortInUseError, ServerStartError
from stream.devenv.jars import ensure_kafka_jars
from stream.devenv.kafka import KafkaBroker
from stream.devenv.postgres import PostgresServer
from stream.devenv.process import free_ports, port_is_free
from stream.devenv.redis_server import (
    RedisServer,
    RedisTls,
    ensure_redis_server_binary,
    resolve_redis_url,
)
from stream.kafka.topics import ensure_topics, standard_topics
from stream.settings import TopicSettings, load_settings

integration = pytest.mark.integration
NO_RETRY = Retry(NoBackoff(), 0)  # redis-py would retry refused connections for seconds


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_libs() -> Path:
    # Cached under <home>/kafka/libs across sessions: Maven runs only the first time.
    return ensure_kafka_jars(load_settings().home)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, kafka_libs: Path) -> Iterator[KafkaBroker]:
    port, controller_port = free_ports(2)
    with KafkaBroker(
        tmp_path_factory.mktemp("kafka"), kafka_libs, port=port, controller_port=controller_port
    ) as started:
        yield started


@pytest.fixture(scope="module")
def redis_binary() -> Path:
    return ensure_redis_server_binary()


def _topic(broker: KafkaBroker, partitions: int = 1) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    assert ensure_topics(broker.kafka_settings(), {name: partitions}) == [name]
    return name


def _produce(broker: KafkaBroker, topic: str, *values: bytes) -> None:
    producer = Producer({**broker.client_config(), "acks": "all"})
    for value in values:
        producer.produce(topic, value, key=b"one-partition")  # keeps _consume's order
    assert producer.flush(30) == 0


def _consume(
    broker: KafkaBroker,
    topic: str,
    *,
    until: bytes,
    group: str | None = None,
    isolation: str = "read_committed",
    timeout_s: float = 30.0,
) -> list[bytes]:
    """Values read from the start of ``topic`` up to and including ``until``."""
    consumer = Consumer(
        {
            **broker.client_config(),
            "group.id": group or f"g-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while until not in values:
            assert time.monotonic() < deadline, f"{until!r} not read within {timeout_s}s: {values}"
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            values.append(message.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


# --- Kafka ------------------------------------------------------------------------------------


@integration
def test_broker_answers_metadata_as_one_node_cluster(broker: KafkaBroker) -> None:
    metadata = AdminClient(broker.client_config()).list_topics(timeout=10)
    assert list(metadata.brokers) == [1]
    assert metadata.brokers[1].host == "127.0.0.1"
    assert broker.answers()


@integration
def test_produce_consume_round_trip(broker: KafkaBroker) -> None:
    topic = _topic(broker)
    _produce(broker, topic, b"one", b"two")
    assert _consume(broker, topic, until=b"two") == [b"one", b"two"]


@integration
def test_auto_topic_creation_is_off(broker: KafkaBroker) -> None:
    producer = Producer({**broker.client_config(), "message.timeout.ms": 1000})
    errors: list[KafkaError] = []
    producer.produce("no-such-topic", b"x", on_delivery=lambda error, _msg: errors.append(error))
    producer.flush(10)
    assert errors
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT)
    assert "no-such-topic" not in AdminClient(broker.client_config()).list_topics(timeout=10).topics


@integration
def test_transactions_commit_and_abort_with_read_committed(broker: KafkaBroker) -> None:
    topic = _topic(broker)
    producer = Producer({**broker.client_config(), "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    assert producer.flush(30) == 0  # on the broker's log before the abort, not just buffered
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"after")
    producer.commit_transaction(30)

    assert _consume(broker, topic, until=b"after") == [b"committed", b"after"]
    read_uncommitted = _consume(broker, topic, until=b"after", isolation="read_uncommitted")
    assert read_uncommitted == [b"committed", b"aborted", b"after"]


@integration
def test_ensure_topics_creates_standard_topics_once(broker: KafkaBroker) -> None:
    prefix = uuid.uuid4().hex[:8]
    names = TopicSettings(
        transactions=f"{prefix}.tx", dlq=f"{prefix}.dlq", alerts=f"{prefix}.alerts",
        alerts_shadow=f"{prefix}.shadow", scores=f"{prefix}.scores", labels=f"{prefix}.labels",
        models=f"{prefix}.models",
    )  # fmt: skip
    wanted = standard_topics(names)
    assert len(wanted) == 7
    assert wanted[f"{prefix}.tx"] == 6
    assert wanted[f"{prefix}.dlq"] == 3

    assert ensure_topics(broker.kafka_settings(), wanted) == sorted(wanted)
    assert ensure_topics(broker.kafka_settings(), wanted) == []  # TOPIC_ALREADY_EXISTS is fine
    topics = AdminClient(broker.client_config()).list_topics(timeout=10).topics
    assert {name: len(topics[name].partitions) for name in wanted} == wanted


@integration
def test_restart_keeps_topics_messages_and_committed_offsets(broker: KafkaBroker) -> None:
    topic, group = _topic(broker, partitions=2), f"g-{uuid.uuid4().hex[:12]}"
    _produce(broker, topic, b"before-1")
    assert _consume(broker, topic, until=b"before-1", group=group) == [b"before-1"]
    pid = broker.pid

    broker.restart()

    assert broker.pid not in (None, pid)
    topics = AdminClient(broker.client_config()).list_topics(timeout=10).topics
    assert len(topics[topic].partitions) == 2
    _produce(broker, topic, b"after-1")
    assert _consume(broker, topic, until=b"after-1", group=group) == [b"after-1"]  # resumed
    assert _consume(broker, topic, until=b"after-1") == [b"before-1", b"after-1"]


@integration
def test_kill_then_start_recovers_acknowledged_messages(broker: KafkaBroker) -> None:
    topic = _topic(broker)
    _produce(broker, topic, b"acked")
    pid = broker.pid
    assert pid is not None

    broker.kill()
    assert not broker.is_running()
    assert not Path(f"/proc/{pid}").exists()

    broker.start()
    assert _consume(broker, topic, until=b"acked") == [b"acked"]


@integration
def test_fresh_broker_stops_cleanly_and_frees_its_ports(tmp_path: Path, kafka_libs: Path) -> None:
    port, controller_port = free_ports(2)
    fresh = KafkaBroker(tmp_path / "kafka", kafka_libs, port=port, controller_port=controller_port)
    fresh.start()
    pid = fresh.pid
    assert pid is not None
    assert fresh.answers()

    fresh.stop()

    assert not Path(f"/proc/{pid}").exists()
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    assert port_is_free(port)
    assert port_is_free(controller_port)
    # Kafka writes this marker only at the end of a controlled shutdown (SIGKILL never does).
    assert (fresh.log_dir / ".kafka_cleanshutdown").exists()
    assert "[BrokerServer id=1] shut down completed" in fresh.server_log.read_text()
    fresh.stop()  # idempotent


@integration
def test_broker_refuses_a_taken_port(tmp_path: Path, kafka_libs: Path, broker: KafkaBroker) -> None:
    (controller_port,) = free_ports(1)
    other = KafkaBroker(tmp_path, kafka_libs, port=broker.port, controller_port=controller_port)
    with pytest.raises(PortInUseError, match=str(broker.port)):
        other.start()


@integration
def test_ensure_kafka_jars_is_cached_and_reports_maven_failures(
    tmp_path: Path, kafka_libs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_maven(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Maven must not run while the pom is unchanged")

    with monkeypatch.context() as patch:
        patch.setattr(jars.subprocess, "run", no_maven)
        assert ensure_kafka_jars(load_settings().home) == kafka_libs

    # A broken pom (parsed locally, so no registry is asked) fails with Maven's own words.
    monkeypatch.setattr(jars, "pom_text", lambda: "<project>not a pom")
    with pytest.raises(JarResolveError, match=r"(?i)pom"):
        ensure_kafka_jars(tmp_path)
    assert not (tmp_path / "kafka" / "libs").exists()


# --- Redis ------------------------------------------------------------------------------------


@integration
def test_redis_start_ping_restart_stop(tmp_path: Path, redis_binary: Path) -> None:
    (port,) = free_ports(1)
    server = RedisServer(port, tmp_path / "redis", binary=redis_binary)
    with server:
        assert server.ping()
        with server.client() as client:
            client.set("k", "v")
        pid = server.pid

        server.restart()

        assert server.pid not in (None, pid)
        assert server.ping()
        with server.client() as client:
            assert client.get("k") is None  # no persistence: a restart starts empty
    assert server.pid is None
    assert port_is_free(port)
    assert "bind 127.0.0.1" in server.config_file.read_text()


@integration
def test_a_running_redis_that_does_not_answer_is_reported_not_killed(
    tmp_path: Path, redis_binary: Path
) -> None:
    # Regression: start() reused a running server of the same directory, and SIGKILLed it
    # when it did not answer in time (paused, or loading a large AOF): not its to kill.
    (port,) = free_ports(1)
    with RedisServer(port, tmp_path / "redis", binary=redis_binary) as server:
        pid = server.pid
        server.pause()
        try:
            again = RedisServer(port, tmp_path / "redis", binary=redis_binary, startup_timeout_s=1)
            with pytest.raises(ServerStartError, match="did not answer"):
                again.start()
            assert server.pid == pid
        finally:
            server.resume()
        assert server.ping()


@integration
def test_redis_password_is_required_and_kept_off_the_command_line(
    tmp_path: Path, redis_binary: Path
) -> None:
    (port,) = free_ports(1)
    password = f"pw with spaces \"'\\ {uuid.uuid4().hex}"
    with RedisServer(port, tmp_path, password=password, binary=redis_binary) as server:
        assert server.ping()
        assert password not in Path(f"/proc/{server.pid}/cmdline").read_text()
        assert server.config_file.stat().st_mode & 0o077 == 0
        with (
            redis.Redis(host="127.0.0.1", port=port, retry=NO_RETRY) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()


@integration
def test_redis_tls_with_password(tmp_path: Path, redis_binary: Path) -> None:
    # Debian's redis-server (7.0) is built with TLS; a build without it would raise
    # TlsUnsupportedError from start().
    files = generate_tls_files(tmp_path / "certs")
    (port,) = free_ports(1)
    password = uuid.uuid4().hex
    tls = RedisTls.from_files(files)
    with RedisServer(port, tmp_path / "redis", password=password, tls=tls, binary=redis_binary):
        url = f"rediss://:{password}@localhost:{port}/0"
        with redis.Redis.from_url(url, ssl_ca_certs=str(files.ca_cert)) as client:
            assert client.ping()
        wrong = f"rediss://:wrong@localhost:{port}/0"
        with (
            redis.Redis.from_url(wrong, ssl_ca_certs=str(files.ca_cert), retry=NO_RETRY) as client,
            pytest.raises(redis.AuthenticationError),
        ):
            client.ping()
        plaintext = f"redis://:{password}@127.0.0.1:{port}/0"
        with (
            redis.Redis.from_url(plaintext, socket_timeout=2, retry=NO_RETRY) as client,
            pytest.raises(redis.ConnectionError),
        ):
            client.ping()
        assert resolve_redis_url(f"{url}?ssl_ca_certs={files.ca_cert}") is not None


@integration
def test_resolve_redis_url(
    tmp_path: Path, redis_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert resolve_redis_url() is None
    (port,) = free_ports(1)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    assert resolve_redis_url(timeout_s=0.5) is None  # nothing listens: start our own

    with RedisServer(port, tmp_path, password="secret", binary=redis_binary):
        monkeypatch.setenv("REDIS_URL", f"redis://:secret@127.0.0.1:{port}/0")
        assert resolve_redis_url() == f"redis://:secret@127.0.0.1:{port}/0"
        with pytest.raises(DevEnvError, match="refused") as refused:
            resolve_redis_url(f"redis://:wrong@127.0.0.1:{port}/0")
        assert "wrong" not in str(refused.value)  # the URL's password is masked


@integration
def test_postgres_runs_as_its_user_and_keeps_committed_rows_through_a_kill() -> None:
    base = Path(tempfile.mkdtemp(prefix="riskstream-pg-"))
    (port,) = free_ports(1)
    server = PostgresServer(port, base)
    try:
        server.start()
        pid = server.pid
        assert pid is not None
        assert Path(f"/proc/{pid}").stat().st_uid != 0  # never root: PostgreSQL refuses it
        url = server.ensure_database("kept", "kept_owner")
        assert url == f"postgresql+psycopg://kept_owner@127.0.0.1:{port}/kept"
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            conn.execute("CREATE TABLE t (n int)")
            conn.execute("INSERT INTO t VALUES (1), (2)")
        server.kill()  # committed, then a crash: the WAL brings the rows back
        assert server.pid is None
        server.start()
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT sum(n) FROM t").fetchone() == (3,)
        with pytest.raises(PortInUseError):
            PostgresServer(port, base / "other").start()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert port_is_free(port)


# --- `riskstream dev` -------------------------------------------------------------------------


@integration
def test_dev_up_status_down(
    tmp_path: Path,
    kafka_libs: Path,
    redis_binary: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A home of its own, sharing the resolved jars (the cache marker travels with them).
    # Outside pytest's private temp dir: PostgreSQL runs as its own user, who must reach it.
    tmp_path = Path(tempfile.mkdtemp(prefix="riskstream-home-"))
    tmp_path.chmod(0o755)
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "libs").symlink_to(kafka_libs)
    marker = kafka_libs.parent / "libs.sha256"
    (tmp_path / "kafka" / "libs.sha256").write_text(marker.read_text())
    monkeypatch.setenv("RISKSTREAM_HOME", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    kafka_port, controller_port, redis_port, postgres_port = free_ports(4)
    ports = [
        f"--kafka-port={kafka_port}",
        f"--controller-port={controller_port}",
        f"--postgres-port={postgres_port}",
    ]
    runner = CliRunner()
    try:
        up = runner.invoke(cli.app, ["up", *ports, f"--redis-port={redis_port}"])
        assert up.exit_code == 0, up.output
        assert f"RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port}" in up.output
        assert f"RISKSTREAM_REDIS__URL=redis://127.0.0.1:{redis_port}/0" in up.output
        desk_url = f"postgresql+psycopg://riskstream@127.0.0.1:{postgres_port}/riskstream"
        assert f"RISKSTREAM_DESK__DATABASE_URL={desk_url}" in up.output
        with psycopg.connect(desk_url.replace("+psycopg", "")) as conn:  # migrated
            assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (0,)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{kafka_port}"})
        topics = admin.list_topics(timeout=10).topics
        assert len(topics["transactions"].partitions) == 6
        assert len(topics["transactions.dlq"].partitions) == 3

        status = runner.invoke(cli.app, ["status"])
        assert status.exit_code == 0
        assert status.output.count("answering") == 3, status.output
        pids = (tmp_path / "dev" / "kafka" / "kafka.pid").read_text()

        again = runner.invoke(cli.app, ["up", *ports, f"--redis-port={redis_port}"])
        assert again.exit_code == 0, again.output
        assert "none (all existed)" in again.output
        assert (tmp_path / "dev" / "kafka" / "kafka.pid").read_text() == pids  # reused
    finally:
        down = runner.invoke(cli.app, ["down"])
    assert down.exit_code == 0, down.output
    assert "Kafka: stopped" in down.output
    assert "Redis: stopped" in down.output
    assert "PostgreSQL: stopped" in down.output
    assert port_is_free(kafka_port)
    assert port_is_free(redis_port)
    assert port_is_free(postgres_port)
    assert runner.invoke(cli.app, ["status"]).output.count("stopped") == 3

    # Bring your own Redis: `up` uses $REDIS_URL when it answers, and `down` leaves it alone.
    with RedisServer(redis_port, tmp_path / "own-redis", binary=redis_binary) as own:
        monkeypatch.setenv("REDIS_URL", own.url)
        try:
            up = runner.invoke(cli.app, ["up", *ports])
            assert up.exit_code == 0, up.output
            assert "(from $REDIS_URL)" in up.output
        finally:
            down = runner.invoke(cli.app, ["down"])
        assert "Redis: from $REDIS_URL, not touched" in down.output
        assert own.ping()
    shutil.rmtree(tmp_path, ignore_errors=True)
