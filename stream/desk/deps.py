"""What every page handler shares: the desk's state, a database session per request, the
signed-in user (or a redirect to the login page), role checks, CSRF checks and rendering."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from stream.desk.auth import SignedIn, resolve_session, tokens_match
from stream.desk.database import guarded
from stream.desk.tables import Role
from stream.pipeline.records import ScoredRecordStore
from stream.settings import Settings

SESSION_COOKIE = "desk_session"
LOGIN_CSRF_COOKIE = "desk_login_csrf"
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


@dataclass
class DeskState:
    settings: Settings
    engine: Engine
    records: ScoredRecordStore | None
    model_versions: list[str] = field(default_factory=list)
    """The queue's model-version choices, read at most once a minute (a DISTINCT over every
    alert costs more than the rest of a queue page)."""
    model_versions_at: float = float("-inf")


class NotSignedIn(Exception):
    """No valid session: the handler answers with a redirect to the login page."""


class Forbidden(Exception):
    """Signed in, but the role may not do this."""


class BadCsrf(Exception):
    """A form post without the session's CSRF token."""


class NotFound(Exception):
    """No such alert, case or page."""


def state(request: Request) -> DeskState:
    desk: DeskState = request.app.state.desk
    return desk


def get_db(request: Request) -> Iterator[Session]:
    with guarded(), Session(state(request).engine, expire_on_commit=False) as db:
        yield db


Db = Annotated[Session, Depends(get_db)]


def signed_in(request: Request, db: Db) -> SignedIn:
    found = resolve_session(db, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise NotSignedIn()
    request.state.who = found
    return found


Who = Annotated[SignedIn, Depends(signed_in)]


def require(*roles: Role) -> Callable[[SignedIn], SignedIn]:
    def check(who: Who) -> SignedIn:
        if not who.may(*roles):
            raise Forbidden()
        return who

    return check


Supervisor = Annotated[SignedIn, Depends(require(Role.SUPERVISOR, Role.ADMIN))]
Admin = Annotated[SignedIn, Depends(require(Role.ADMIN))]


def csrf_checked(who: Who, csrf_token: Annotated[str, Form()] = "") -> SignedIn:
    """The signed-in user of a form post that carries the session's CSRF token."""
    if not tokens_match(who.csrf_token, csrf_token):
        raise BadCsrf()
    return who


Poster = Annotated[SignedIn, Depends(csrf_checked)]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    who = getattr(request.state, "who", None)
    return TEMPLATES.TemplateResponse(
        request, template, {"who": who, "Role": Role, **context}, status_code=status_code
    )
