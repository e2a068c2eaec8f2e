"""The desk's fixtures: a real PostgreSQL server for the session, a fresh migrated database per
test, alerts built from plain values, and the desk served over real HTTP.

PostgreSQL is Debian's, started here as its own system user on a free loopback port, unless
``POSTGRES_URL`` names a server we may create databases on (a superuser conninfo URL, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``), as REDIS_URL does for Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import psycopg
import pytest
import uvicorn
from confluent_kafka import Consumer, Message, Producer
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

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
from stream.desk.app import create_app
from stream.desk.auth import hash_password
from stream.desk.database import upgrade, utcnow
from stream.desk.intake import Received, store_alerts
from stream.desk.tables import User
from stream.devenv import free_ports
from stream.devenv.postgres import PostgresServer
from stream.settings import DeskSettings, KafkaSettings, Settings, to_env

POSTGRES_URL_ENV = "POSTGRES_URL"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"  # every test user's password (>= 12 characters)


@dataclass
class Postgres:
    """Where test databases are created: an admin conninfo and the URL template for a db."""

    admin_conninfo: str
    server: PostgresServer | None

    def url(self, database: str) -> str:
        parts = urlsplit(self.admin_conninfo)
        return urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{database}"))

    def create(self, database: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
            if template:
                statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(database), sql.Identifier(template)
                )
            conn.execute(statement)
        return self.url(database)

    def drop(self, database: str) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def pg_tempdir() -> Path:
    """A directory the postgres user can reach (pytest's tmp_path is private to root)."""
    return Path(tempfile.mkdtemp(prefix="riskstream-pg-"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        yield Postgres(external, None)
        return
    base = pg_tempdir()
    (port,) = free_ports(1)
    server = PostgresServer(port, base, durable=False)
    try:
        with server:
            yield Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def desk_template(postgres: Postgres) -> Iterator[str]:
    """A database migrated once; each test's database is a copy (CREATE DATABASE ... TEMPLATE)."""
    name = f"desk_template_{uuid.uuid4().hex[:8]}"
    engine = create_engine(postgres.create(name))
    upgrade(engine)
    engine.dispose()
    yield name
    postgres.drop(name)


@pytest.fixture
def desk_url(postgres: Postgres, desk_template: str) -> Iterator[str]:
    name = f"desk_{uuid.uuid4().hex[:10]}"
    url = postgres.create(name, template=desk_template)
    yield url
    postgres.drop(name)


@pytest.fixture
def engine(desk_url: str) -> Iterator[Engine]:
    engine = create_engine(desk_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def desk_config(desk_url: str) -> DeskSettings:
    return DeskSettings(
        database_url=desk_url,
        intake_group_id=f"desk-{uuid.uuid4().hex[:8]}",
        relay_idle_s=0.1,
    )


@pytest.fixture
def web_settings(desk_config: DeskSettings) -> Settings:
    """Settings for the pages alone: no broker or topics needed."""
    return Settings(desk=desk_config)


@pytest.fixture
def desk_settings(test_settings: Settings, desk_config: DeskSettings) -> Settings:
    """Settings for the intake and relay: this test's topics on the session's broker."""
    return test_settings.model_copy(update={"desk": desk_config})


def make_alert(
    n: int,
    *,
    customer: str = "cust-1",
    typology: Typology = Typology.MULE_FAN_IN_OUT,
    score: float = 0.8,
    model_version: str = "m-test",
    at: datetime = T0,
    emitted_at: datetime | None = None,
) -> Alert:
    event_time = at + timedelta(minutes=n)
    event = TransactionEvent(
        event_id=f"ev-{customer}-{n:05d}",
        event_time=event_time,
        customer_id=customer,
        account_id=f"acc-{customer}",
        channel=Channel.WIRE,
        direction=Direction.OUTBOUND,
        amount_minor=125_000 + n,
        currency="EUR",
        counterparty_id=f"acc-ext-{n}",
        counterparty_type=CounterpartyType.ACCOUNT,
        country="AE",
    )
    narrative = (
        "A retail customer sends a transfer far above their usual amounts "
        "to a high-risk jurisdiction, the third new beneficiary this week."
    )
    emitted = emitted_at or event_time + timedelta(milliseconds=95)
    return Alert(
        alert_id=alert_id_for(event.event_id, model_version),
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
        narrative=narrative,
        model_version=model_version,
        narrative_version="n-test",
        event_time=event_time,
        received_at=emitted,
        scored_at=emitted,
        emitted_at=emitted,
    )


def store(engine: Engine, alerts: list[Alert]) -> None:
    with Session(engine) as db, db.begin():
        store_alerts(db, [Received(encode(a), f"test[0]@{i}") for i, a in enumerate(alerts)])


@pytest.fixture(scope="session")
def password_hash() -> str:
    """PASSWORD hashed once (argon2id at the production parameters costs about a second on a
    busy 2-core machine); every test user gets a copy."""
    return hash_password(PASSWORD)


@pytest.fixture
def users(engine: Engine, password_hash: str) -> dict[str, str]:
    """One user per role (name = role) plus a second analyst; all share PASSWORD."""
    names = {
        "analyst": "analyst",
        "analyst2": "analyst",
        "supervisor": "supervisor",
        "admin": "admin",
    }
    with Session(engine) as db, db.begin():
        for name, role in names.items():
            db.add(
                User(
                    username=name,
                    password_hash=password_hash,
                    role=role,
                    active=True,
                    created_at=utcnow(),
                )
            )
    return names


class LiveDesk:
    """The desk app under uvicorn on a free loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        (self.port,) = free_ports(1)
        app = create_app(settings, engine, None)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveDesk:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("the desk did not start listening")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_desk(web_settings: Settings, engine: Engine) -> Iterator[LiveDesk]:
    with LiveDesk(web_settings, engine) as desk:
        yield desk


def login(base_url: str, username: str, password: str = PASSWORD) -> httpx.Client:
    """An HTTP client signed in as ``username`` (through the real login form)."""
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
    form = client.get("/login")
    token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    assert answer.status_code == 303, answer.text
    return client


def csrf_of(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


@pytest.fixture
def signed_in(
    live_desk: LiveDesk, users: dict[str, str]
) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(username: str) -> httpx.Client:
        clients.append(login(live_desk.url, username))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


# -- Kafka and processes -----------------------------------------------------------------------


def produce(
    kafka: KafkaSettings,
    topic: str,
    values: list[bytes],
    *,
    transactional_id: str | None = None,
    abort: bool = False,
) -> None:
    """Produce keyed by customer; with ``transactional_id`` in one transaction (aborted if
    ``abort``), as the scorer's exactly-once mode does."""
    config = {**kafka.client_config(), "enable.idempotence": True, "linger.ms": 5}
    if transactional_id:
        config["transactional.id"] = transactional_id
    producer = Producer(config)
    if transactional_id:
        producer.init_transactions(30)
        producer.begin_transaction()
    for value in values:
        try:
            key = str(orjson.loads(value)["event"]["customer_id"]).encode()
        except (orjson.JSONDecodeError, KeyError, TypeError):
            key = b"malformed"
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if transactional_id:
        if abort:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    assert producer.flush(60) == 0


def read_topic(kafka: KafkaSettings, topic: str, idle_s: float = 3.0) -> list[Message]:
    """Every committed message of ``topic`` (read until ``idle_s`` without one)."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            messages.append(message)
            last = time.monotonic()
    finally:
        consumer.close()
    return messages


def wait_for(
    probe: Callable[[], object],
    what: str,
    timeout_s: float = 120,
    detail: Callable[[], str] | None = None,
) -> object:
    """Poll ``probe`` until it is truthy; on time-out fail with ``detail()`` (e.g. a log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{detail()}" if detail else ""))


@dataclass
class DeskProcess:
    """`riskstream run desk ...` (or another command) as a child process, logging to a file."""

    settings: Settings
    log_path: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> DeskProcess:
        env = {**os.environ, **to_env(self.settings), "HF_HUB_OFFLINE": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        """The log without librdkafka's own lines (the '%N|...' ones)."""
        text = self.log_path.read_text(errors="replace")
        lines = [ln[:300] for ln in text.splitlines() if not ln.startswith("%")]
        return "\n".join(lines)[-6000:]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def start_desk(tmp_path: Path) -> Iterator[Callable[..., DeskProcess]]:
    started: list[DeskProcess] = []

    def start(
        settings: Settings, *args: str, command: tuple[str, ...] = ("run", "desk")
    ) -> DeskProcess:
        log_path = tmp_path / f"{command[-1]}-{len(started)}.log"
        started.append(DeskProcess(settings, log_path, [*command, *args]).start())
        return started[-1]

    yield start
    for process in started:
        process.stop_quietly()
