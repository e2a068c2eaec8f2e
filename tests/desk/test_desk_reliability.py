"""PostgreSQL crashes while analysts work: no disposition the desk confirmed is lost, and the
relay sends no label twice.

The desk runs as a real process (web pages and relay) against a PostgreSQL server of this
test's own, with fsync on. Analysts post dispositions over HTTP; a third of the way in the
postmaster is killed (SIGKILL, as a crash) and started again a few seconds later. Requests in
between fail with 503 or a dropped connection and are retried, as a person would."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from schemas import LabelEvent, decode
from stream.desk.auth import add_user
from stream.desk.database import upgrade
from stream.desk.tables import Disposition, OutboxRow
from stream.devenv import free_ports
from stream.devenv.postgres import PostgresServer
from stream.settings import Settings

from .conftest import PASSWORD, DeskProcess, csrf_of, make_alert, pg_tempdir, read_topic, store
from .conftest import wait_for as wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    base = pg_tempdir()
    (port,) = free_ports(1)
    server = PostgresServer(port, base)  # durable: fsync on
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _sign_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    page = client.get("/login")
    answer = client.post(
        "/login",
        data={"username": "analyst", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    assert answer.status_code == 303
    return client


def test_postgres_killed_mid_use_loses_no_disposition_and_sends_no_label_twice(
    own_postgres: PostgresServer,
    test_settings: Settings,
    start_desk: Callable[..., DeskProcess],
) -> None:
    url = own_postgres.ensure_database()
    engine = create_engine(url, pool_pre_ping=True)
    upgrade(engine)
    alerts = [
        make_alert(i, customer=f"c{i % 6}", at=datetime.now(UTC) - timedelta(hours=2))
        for i in range(45)
    ]
    store(engine, alerts)
    with Session(engine) as db, db.begin():
        add_user(db, "analyst", PASSWORD, "analyst")
    (port,) = free_ports(1)
    desk_settings = test_settings.model_copy(
        update={
            "desk": test_settings.desk.model_copy(
                update={"database_url": url, "port": port, "relay_idle_s": 0.05}
            )
        }
    )
    desk = start_desk(desk_settings, "--no-intake")
    base = f"http://127.0.0.1:{port}"
    wait(lambda: _answers(base), "the desk to serve", 60, desk.log)
    client = _sign_in(base)
    token = csrf_of(client.get("/queue").text)

    crash = threading.Thread(target=_crash_and_restart, args=(own_postgres,))
    confirmed: list[str] = []
    failures = 0
    pending = [a.alert_id for a in alerts]
    while pending:
        alert_id = pending[0]
        if len(confirmed) == 15 and not crash.is_alive() and failures == 0:
            crash.start()
            time.sleep(0.3)
        verdict = "suspicious" if len(confirmed) % 2 else "legitimate"
        try:
            answer = client.post(
                f"/alerts/{alert_id}/disposition",
                data={"csrf_token": token, "verdict": verdict, "typology": "mule_fan_in_out"},
            )
        except httpx.TransportError:
            answer = None
        location = answer.headers.get("location", "") if answer is not None else ""
        if (
            answer is not None
            and answer.status_code == 303
            and (
                "error=" not in location or "already" in location  # committed, reply lost: kept
            )
        ):
            confirmed.append(pending.pop(0))
            continue
        failures += 1
        assert failures < 400, desk.log()
        time.sleep(0.1)
    crash.join(60)
    assert failures > 0, "the crash fell outside the run: nothing was tested"

    def all_sent() -> bool:
        with Session(engine) as db:
            return db.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) == 0

    wait(all_sent, "the relay to publish every label", 120, desk.log)
    with Session(engine) as db:
        stored = set(db.scalars(select(Disposition.alert_id)))
        assert stored == set(confirmed)  # every confirmed disposition is there
        assert db.scalar(select(func.count()).select_from(OutboxRow)) == len(alerts)
    labels = Counter(
        decode(LabelEvent, m.value()).alert_id
        for m in read_topic(test_settings.kafka, test_settings.topics.labels)
    )
    assert set(labels) == set(confirmed)
    assert max(labels.values()) == 1, "a label was sent twice"
    assert desk.terminate() == 0, desk.log()
    client.close()
    engine.dispose()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _crash_and_restart(server: PostgresServer) -> None:
    server.kill()
    time.sleep(3)
    server.start()
