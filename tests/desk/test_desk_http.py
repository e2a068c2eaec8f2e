"""The desk over real HTTP (uvicorn on loopback, real PostgreSQL): the queue's filters, the
alert page, dispositions and the outbox row each one writes, cases and the audit trail."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from schemas import LabelEvent, LabelSource, Typology, decode
from stream.desk.outbox import label_id_for
from stream.desk.tables import AlertRow, AuditEntry, Case, OutboxRow

from .conftest import csrf_of, make_alert, store

pytestmark = pytest.mark.integration

Client = Callable[[str], httpx.Client]


def test_queue_filters_sorts_and_pages(engine: Engine, signed_in: Client) -> None:
    alerts = [make_alert(i, customer=f"c{i % 7}", score=0.5 + (i % 50) / 100) for i in range(120)]
    alerts += [
        make_alert(
            i,
            customer="c-ato",
            typology=Typology.ACCOUNT_TAKEOVER,
            score=0.97,
            model_version="m-other",
        )
        for i in range(3)
    ]
    store(engine, alerts)
    client = signed_in("analyst")

    page = client.get("/queue")
    assert page.status_code == 200
    assert "123 alerts" in page.text
    assert page.text.count('class="alert-link"') == 50  # desk.page_size
    assert "page 1 of 3" in page.text

    ato = client.get("/queue", params={"typology": "account_takeover"})
    assert "3 alerts" in ato.text
    assert client.get("/queue", params={"model": "m-other"}).text.count('class="alert-link"') == 3
    high = client.get("/queue", params={"band": "0.9-1.0"})
    assert f"{sum(a.score >= 0.9 for a in alerts)} alerts" in high.text
    # Emitted in March 2026, long before "now": nothing is younger than a week.
    assert "No alerts match." in client.get("/queue", params={"age": "7d"}).text
    assert "123 alerts" in client.get("/queue", params={"age": "older"}).text
    last = client.get("/queue", params={"page": "3", "sort": "oldest"})
    assert last.text.count('class="alert-link"') == 23


def test_an_alert_page_shows_the_event_narrative_reasons_and_the_customers_alerts(
    engine: Engine, signed_in: Client
) -> None:
    alerts = [make_alert(i, customer="c-1") for i in range(3)]
    store(engine, alerts)
    client = signed_in("analyst")
    page = client.get(f"/alerts/{alerts[1].alert_id}")
    assert page.status_code == 200
    assert "<mark" in page.text
    assert "a transfer far above their usual amounts</mark>" in page.text
    assert "1,250.01 EUR" in page.text  # the event's amount, in major units
    assert page.text.count('href="/alerts/') >= 2  # the customer's other alerts
    assert "threshold 0.500" in page.text
    assert "m-test" in page.text
    assert client.get("/alerts/no-such-alert").status_code == 404


def test_a_disposition_writes_one_label_to_the_outbox_and_closes_the_case(
    engine: Engine, signed_in: Client
) -> None:
    alerts = [make_alert(i, customer="c-9") for i in range(2)]
    store(engine, alerts)
    client = signed_in("analyst")
    first, second = alerts

    page = client.get(f"/alerts/{first.alert_id}")
    answer = client.post(
        f"/alerts/{first.alert_id}/disposition",
        data={
            "csrf_token": csrf_of(page.text),
            "verdict": "suspicious",
            "typology": "mule_fan_in_out",
            "note": "mule pattern",
        },
    )
    assert answer.status_code == 303
    again = client.post(
        f"/alerts/{first.alert_id}/disposition",
        data={"csrf_token": csrf_of(page.text), "verdict": "legitimate"},
    )
    assert (
        "already+closed" in again.headers["location"]
        or "already%20closed" in again.headers["location"]
    )
    client.post(
        f"/alerts/{second.alert_id}/disposition",
        data={"csrf_token": csrf_of(page.text), "verdict": "needs_info"},
    )

    with Session(engine) as db:
        rows = db.scalars(select(OutboxRow)).all()
        assert len(rows) == 1  # needs_info sends no label; the refused second one neither
        label = decode(LabelEvent, rows[0].payload)
        assert label.label_id == label_id_for(first.alert_id)
        assert (label.alert_id, label.source, label.typology, label.is_suspicious) == (
            first.alert_id,
            LabelSource.ANALYST,
            Typology.MULE_FAN_IN_OUT,
            True,
        )
        assert label.event_id == first.event.event_id
        assert label.note == "mule pattern"
        case = db.scalars(select(Case)).one()
        assert (case.alert_count, case.open_alerts, case.status) == (2, 1, "open")
        assert db.get(AlertRow, second.alert_id).status == "needs_info"  # type: ignore[union-attr]
        actions = db.scalars(select(AuditEntry.action).where(AuditEntry.username == "analyst"))
        assert sorted(actions) == ["alert.disposition", "alert.disposition", "login"]

    client.post(
        f"/alerts/{second.alert_id}/disposition",
        data={"csrf_token": csrf_of(page.text), "verdict": "legitimate"},
    )
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(OutboxRow)) == 2
        case = db.scalars(select(Case)).one()
        assert (case.open_alerts, case.status) == (0, "closed")
    store(engine, [make_alert(5, customer="c-9")])  # a new alert opens a new case
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(Case)) == 2


def test_assign_to_me_and_the_mine_filter(engine: Engine, signed_in: Client) -> None:
    alerts = [make_alert(i) for i in range(4)]
    store(engine, alerts)
    client = signed_in("analyst")
    token = csrf_of(client.get("/queue").text)
    answer = client.post(
        f"/alerts/{alerts[2].alert_id}/assign",
        data={"csrf_token": token, "back": "https://evil.example/"},
    )
    assert answer.headers["location"] == f"/alerts/{alerts[2].alert_id}"  # no open redirect
    mine = client.get("/queue", params={"mine": "1"})
    assert mine.text.count('class="alert-link"') == 1
    assert alerts[2].alert_id in mine.text


def test_case_page_notes_and_history(engine: Engine, signed_in: Client) -> None:
    store(engine, [make_alert(i, customer="c-5") for i in range(2)])
    client = signed_in("analyst")
    with Session(engine) as db:
        case_id = db.scalars(select(Case.id)).one()
    page = client.get(f"/cases/{case_id}")
    assert page.status_code == 200
    assert page.text.count('href="/alerts/') == 2
    client.post(
        f"/cases/{case_id}/notes",
        data={"csrf_token": csrf_of(page.text), "text": "called the customer <b>"},
    )
    page = client.get(f"/cases/{case_id}")
    assert "called the customer &lt;b&gt;" in page.text  # escaped, never markup
    assert "case.note" in page.text


def test_the_supervisor_page_draws_its_plots(engine: Engine, signed_in: Client) -> None:
    alerts = [make_alert(i, customer=f"c{i}") for i in range(6)]
    store(engine, alerts)
    analyst = signed_in("analyst")
    token = csrf_of(analyst.get("/queue").text)
    for alert, verdict in zip(
        alerts[:4], ["suspicious", "legitimate", "suspicious", "suspicious"], strict=True
    ):
        analyst.post(
            f"/alerts/{alert.alert_id}/disposition",
            data={"csrf_token": token, "verdict": verdict, "typology": "structuring"},
        )
    supervisor = signed_in("supervisor")
    page = supervisor.get("/supervisor")
    assert page.status_code == 200
    assert "0.75" in page.text  # precision of m-test on mule_fan_in_out: 3 of 4
    for name in ("volume", "precision", "time-to-disposition"):
        png = supervisor.get(f"/supervisor/plots/{name}.png")
        assert png.status_code == 200
        assert png.content.startswith(b"\x89PNG")
    assert supervisor.get("/supervisor/plots/nope.png").status_code == 404
