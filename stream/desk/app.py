"""The desk's web application: assembly, sign-in, user administration and error pages.

Server-rendered pages (FastAPI + Jinja2, autoescaped) and plain HTML forms; no script runs in
the browser, so the Content-Security-Policy forbids all scripts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, select, text
from starlette.exceptions import HTTPException as StarletteHTTPException

from stream.desk.auth import (
    add_user,
    audit,
    authenticate,
    end_session,
    new_csrf_token,
    set_active,
    start_session,
    tokens_match,
)
from stream.desk.database import guarded
from stream.desk.deps import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Admin,
    BadCsrf,
    Db,
    DeskState,
    Forbidden,
    NotFound,
    NotSignedIn,
    Poster,
    render,
    state,
)
from stream.desk.errors import DatabaseUnavailable, UserError
from stream.desk.pages import router
from stream.desk.queries import FilterError
from stream.desk.tables import Role, User
from stream.pipeline.records import ScoredRecordStore
from stream.settings import Settings

log = logging.getLogger(__name__)

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings, engine: Engine, records: ScoredRecordStore | None) -> FastAPI:
    app = FastAPI(title="riskstream case desk", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.desk = DeskState(settings, engine, records)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.include_router(router)
    _auth_routes(app)
    _error_pages(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        path="/",
        secure=state(request).settings.desk.secure_cookies,
    )


def _auth_routes(app: FastAPI) -> None:
    @app.get("/health")
    def health(request: Request) -> JSONResponse:
        try:
            with guarded(), state(request).engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DatabaseUnavailable:
            return JSONResponse({"status": "degraded", "database": "unavailable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        token = new_csrf_token()
        response = render(request, "login.html", csrf_token=token, error=None)
        _set_cookie(response, request, LOGIN_CSRF_COOKIE, token, 3600)
        return response

    @app.post("/login")
    def login(
        request: Request,
        db: Db,
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Response:
        if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
            raise BadCsrf()
        user = authenticate(db, username[:64], password[:1024])
        if user is None:
            audit(db, None, "login.failed", f"user:{username[:64]}")
            db.commit()
            token = new_csrf_token()
            response = render(
                request,
                "login.html",
                401,
                csrf_token=token,
                error="Wrong user name or password, or the user is disabled.",
            )
            _set_cookie(response, request, LOGIN_CSRF_COOKIE, token, 3600)
            return response
        lifetime = timedelta(minutes=state(request).settings.desk.session_minutes)
        session_token = start_session(db, user, lifetime)
        audit(db, user, "login", f"user:{user.username}")
        db.commit()
        redirect = RedirectResponse("/queue", status_code=303)
        _set_cookie(redirect, request, SESSION_COOKIE, session_token, int(lifetime.total_seconds()))
        redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return redirect

    @app.post("/logout")
    def logout(request: Request, who: Poster, db: Db) -> RedirectResponse:
        end_session(db, request.cookies.get(SESSION_COOKIE))
        audit(db, who.user, "logout", f"user:{who.user.username}")
        db.commit()
        redirect = RedirectResponse("/login", status_code=303)
        redirect.delete_cookie(SESSION_COOKIE, path="/")
        return redirect

    @app.get("/admin/users", response_class=HTMLResponse)
    def users(request: Request, who: Admin, db: Db) -> HTMLResponse:
        listed = db.scalars(select(User).order_by(User.username)).all()
        error = request.query_params.get("error")
        return render(
            request,
            "users.html",
            users=listed,
            roles=[r.value for r in Role],
            error=error[:200] if error else None,
        )

    @app.post("/admin/users")
    def create_user(
        who: Admin,
        poster: Poster,
        db: Db,
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        role: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        try:
            add_user(db, username, password, role, by=who.user)
        except UserError as error:
            db.rollback()
            return RedirectResponse(f"/admin/users?error={quote(str(error))}", status_code=303)
        db.commit()
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{username}/disable")
    def disable_user(username: str, who: Admin, poster: Poster, db: Db) -> RedirectResponse:
        try:
            set_active(db, username, False, by=who.user)
        except UserError as error:
            raise NotFound() from error
        db.commit()
        return RedirectResponse("/admin/users", status_code=303)


def _error_pages(app: FastAPI) -> None:
    def page(request: Request, status: int, title: str, message: str) -> Response:
        return render(request, "error.html", status, title=title, message=message)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return page(request, 403, "Not allowed", "Your role may not open this page.")

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, exc: BadCsrf) -> Response:
        return page(
            request,
            403,
            "Form expired",
            "The form's security token is missing or wrong. Reload the page and retry.",
        )

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return page(request, 404, "Not found", "There is no such page, alert, case or user.")

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError) -> Response:
        return page(request, 400, "Bad filter", str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:3])
        return page(request, 400, "Bad request", f"Invalid value in: {where}")

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: DatabaseUnavailable) -> Response:
        log.warning("request %s failed: %s", request.url.path, exc)
        return page(
            request,
            503,
            "Database unavailable",
            "The desk's database did not answer; nothing was changed. Retry shortly.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return page(request, exc.status_code, "Error", str(exc.detail))
