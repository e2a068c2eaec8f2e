"""Who may do what, checked over real HTTP against the real app and database: anonymous
requests, roles, CSRF tokens, disabled users, expired sessions and injection in filters."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from stream.desk import pages
from stream.desk.app import create_app
from stream.desk.tables import AlertRow, Case, LoginSession, OutboxRow, User
from stream.settings import Settings

from .conftest import PASSWORD, LiveDesk, csrf_of, login, make_alert, store

pytestmark = pytest.mark.integration

Client = Callable[[str], httpx.Client]
PUBLIC = {"/health", "/login"}


def every_route(settings: Settings, engine: Engine) -> list[tuple[str, str]]:
    """(method, path template) of every page the app serves: new pages are covered by the
    anonymous test without editing it."""
    app = create_app(settings, engine, None)
    return sorted(
        (method, route.path)
        for route in [*app.routes, *pages.router.routes]
        if isinstance(route, APIRoute)
        for method in route.methods
    )


def test_every_page_refuses_an_anonymous_request(
    web_settings: Settings, engine: Engine, live_desk: LiveDesk
) -> None:
    alert = make_alert(1)
    store(engine, [alert])
    values = {"alert_id": alert.alert_id, "case_id": "1", "name": "volume", "username": "admin"}
    routes = every_route(web_settings, engine)
    assert len(routes) >= 15
    checked = 0
    with httpx.Client(base_url=live_desk.url) as anonymous:
        for method, template in routes:
            if template in PUBLIC:
                continue
            path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)
            answer = anonymous.request(method, path, data={"verdict": "legitimate"})
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"] == "/login"
            checked += 1
        assert anonymous.get("/health").json() == {"status": "ok", "database": "ok"}
    assert checked >= 13
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(OutboxRow)) == 0


def test_an_analyst_cannot_reach_supervisor_or_admin_pages(signed_in: Client) -> None:
    analyst = signed_in("analyst")
    token = csrf_of(analyst.get("/queue").text)
    for path in ("/admin/users", "/supervisor", "/audit", "/supervisor/plots/volume.png"):
        assert analyst.get(path).status_code == 403, path
    created = analyst.post(
        "/admin/users",
        data={"csrf_token": token, "username": "mallory", "password": PASSWORD, "role": "admin"},
    )
    assert created.status_code == 403
    disabled = analyst.post("/admin/users/admin/disable", data={"csrf_token": token})
    assert disabled.status_code == 403
    supervisor = signed_in("supervisor")
    assert supervisor.get("/supervisor").status_code == 200
    assert supervisor.get("/admin/users").status_code == 403
    assert signed_in("admin").get("/admin/users").status_code == 200


def test_a_form_without_the_sessions_csrf_token_is_refused(
    engine: Engine, signed_in: Client, live_desk: LiveDesk
) -> None:
    alert = make_alert(1)
    store(engine, [alert])
    analyst, other = signed_in("analyst"), signed_in("analyst2")
    other_token = csrf_of(other.get("/queue").text)
    path = f"/alerts/{alert.alert_id}/disposition"
    for token in (None, "", "forged", other_token):
        data = {"verdict": "legitimate"} | ({"csrf_token": token} if token is not None else {})
        answer = analyst.post(path, data=data)
        assert answer.status_code == 403, token
        assert "security token" in answer.text
    for path in (f"/alerts/{alert.alert_id}/assign", "/cases/1/notes", "/logout"):
        assert analyst.post(path, data={"csrf_token": other_token}).status_code == 403
    with httpx.Client(base_url=live_desk.url) as fresh:  # the login form's double submit
        refused = fresh.post(
            "/login", data={"username": "analyst", "password": PASSWORD, "csrf_token": "guessed"}
        )
        assert refused.status_code == 403
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(OutboxRow)) == 0
        row = db.get(AlertRow, alert.alert_id)
        assert row is not None
        assert (row.status, row.assignee_id) == ("open", None)


def test_a_disabled_user_is_locked_out_at_once(signed_in: Client, live_desk: LiveDesk) -> None:
    analyst = signed_in("analyst")
    assert analyst.get("/queue").status_code == 200
    admin = signed_in("admin")
    page = admin.get("/admin/users")
    disabled = admin.post("/admin/users/analyst/disable", data={"csrf_token": csrf_of(page.text)})
    assert disabled.status_code == 303
    assert analyst.get("/queue").status_code == 303  # the open session ended
    with httpx.Client(base_url=live_desk.url) as again:
        form = again.get("/login")
        answer = again.post(
            "/login",
            data={"username": "analyst", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        )
        assert answer.status_code == 401
        assert "desk_session" not in answer.cookies


def test_sessions_expire_and_passwords_are_argon2id(
    engine: Engine, signed_in: Client, live_desk: LiveDesk
) -> None:
    analyst = signed_in("analyst")
    assert analyst.get("/queue").status_code == 200
    cookie = analyst.cookies.jar
    assert any(c.name == "desk_session" and c.has_nonstandard_attr("HttpOnly") for c in cookie)
    with Session(engine) as db, db.begin():
        db.execute(update(LoginSession).values(expires_at=func.now()))
        assert all(h.startswith("$argon2id$") for h in db.scalars(select(User.password_hash)))
        assert PASSWORD not in "".join(db.scalars(select(User.password_hash)))
    assert analyst.get("/queue").status_code == 303
    wrong = httpx.Client(base_url=live_desk.url)
    with pytest.raises(AssertionError):
        login(live_desk.url, "analyst", "not the password")
    wrong.close()


INJECTIONS = [
    {"typology": "structuring' OR '1'='1"},
    {"model": "m-test' OR 1=1 --"},
    {"status": "open' OR 'x'='x"},
    {"sort": "score; DROP TABLE alerts"},
    {"band": "0.9-1.0) OR (1=1"},
    {"age": "1h' UNION SELECT password_hash FROM users --"},
    {"page": "1 OR 1=1"},
    {"mine": "1; DELETE FROM cases"},
    {"status; DROP TABLE users --": "open"},
]


def test_sql_injection_in_filters_returns_an_error_not_data(
    engine: Engine, signed_in: Client
) -> None:
    alerts = [make_alert(i) for i in range(3)]
    store(engine, alerts)
    analyst = signed_in("analyst")
    for params in INJECTIONS:
        answer = analyst.get("/queue", params=params)
        assert answer.status_code == 400, params
        assert not any(a.alert_id in answer.text for a in alerts), params
        assert "$argon2" not in answer.text
    with Session(engine) as db:  # and nothing happened to the data
        assert db.scalar(select(func.count()).select_from(AlertRow)) == 3
        assert db.scalar(select(func.count()).select_from(Case)) == 1
        assert db.scalar(select(func.count()).select_from(User)) == 4
    assert analyst.get(f"/alerts/{alerts[0].alert_id}' OR '1'='1").status_code == 404
    assert analyst.get("/cases/1 OR 1=1").status_code == 400
    assert analyst.get("/queue", params={"typology": "structuring"}).status_code == 200


def test_pages_carry_security_headers(signed_in: Client) -> None:
    page = signed_in("analyst").get("/queue")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
