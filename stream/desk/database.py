"""Connecting to the desk's database and bringing its schema up to date (Alembic)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from stream.desk.errors import DatabaseUnavailable, DeskError
from stream.settings import DeskSettings

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(desk: DeskSettings, *, pool_size: int = 5) -> Engine:
    """An engine whose pooled connections are checked before use, so a restarted PostgreSQL
    costs one failed request at most rather than a pool of dead connections."""
    try:
        url = make_url(desk.database_url)
    except ArgumentError as error:
        raise DeskError(f"desk.database_url is not a database URL: {error}") from error
    if url.get_backend_name() != "postgresql":
        raise DeskError("desk.database_url must be a postgresql+psycopg:// URL")
    if desk.database_password is not None:
        url = url.set(password=desk.database_password.get_secret_value())
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "riskstream-desk"},
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def guarded() -> Iterator[None]:
    """Turn a lost or refused database connection into :class:`DatabaseUnavailable`."""
    try:
        yield
    except OperationalError as error:
        raise DatabaseUnavailable(f"PostgreSQL unavailable: {error.orig}") from error
    except DBAPIError as error:
        if error.connection_invalidated:
            raise DatabaseUnavailable(f"PostgreSQL connection lost: {error.orig}") from error
        raise


def _alembic_config() -> Config:
    config = Config()
    location = resources.files("stream.desk") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with guarded(), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` in one transaction."""
    config = _alembic_config()
    with guarded(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def require_current_schema(engine: Engine) -> None:
    """Refuse to serve on a database whose schema is not the code's (a clear message, not SQL
    errors on the first page)."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DeskError(
            f"the desk database is at schema revision {current or 'none'}, this riskstream "
            f"needs {head}: run `riskstream desk db upgrade`"
        )
