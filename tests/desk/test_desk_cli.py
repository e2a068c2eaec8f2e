"""`riskstream desk ...` against a real PostgreSQL: schema upgrades, user management with clear
errors (no tracebacks), `run desk` refusing an unmigrated database, and the demo's login."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from stream.cli import app
from stream.desk.cli import demo_banner
from stream.desk.database import current_revision, head_revision
from stream.desk.tables import LoginSession, User
from stream.settings import Settings

from .conftest import PASSWORD, Postgres

pytestmark = pytest.mark.integration


def test_db_upgrade_then_user_add_and_disable(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"desk_cli_{uuid.uuid4().hex[:8]}"
    url = postgres.create(name)
    monkeypatch.setenv("RISKSTREAM_DESK__DATABASE_URL", url)
    runner = CliRunner()
    try:
        refused = runner.invoke(app, ["run", "desk", "--no-web"])
        assert refused.exit_code == 2
        assert "riskstream desk db upgrade" in refused.output
        assert runner.invoke(app, ["desk", "user", "disable", "x"]).exit_code == 1

        upgraded = runner.invoke(app, ["desk", "db", "upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        assert f"desk schema at {head_revision()} (was empty)" in upgraded.output
        again = runner.invoke(app, ["desk", "db", "upgrade"])
        assert again.output.strip().endswith(f"desk schema at {head_revision()}")

        add = ["desk", "user", "add", "carol", "--role", "supervisor", "--password-stdin"]
        added = runner.invoke(app, add, input=f"{PASSWORD}\n")
        assert added.exit_code == 0, added.output
        for args, stdin, problem in (
            (add, f"{PASSWORD}\n", "exists already"),
            (
                ["desk", "user", "add", "dave", "--role", "root", "--password-stdin"],
                f"{PASSWORD}\n",
                "unknown role 'root'",
            ),
            (["desk", "user", "add", "erin", "--password-stdin"], "short\n", "12 characters"),
            (["desk", "user", "add", "Bad Name", "--password-stdin"], f"{PASSWORD}\n", "user name"),
            (["desk", "user", "disable", "nobody"], "", "no user 'nobody'"),
        ):
            result = runner.invoke(app, args, input=stdin)
            assert result.exit_code == 1, result.output
            assert problem in result.output
            assert "Traceback" not in result.output
        assert runner.invoke(app, ["desk", "user", "disable", "carol"]).exit_code == 0
        engine = create_engine(url)
        with Session(engine) as db:
            carol = db.scalars(select(User).where(User.username == "carol")).one()
            assert (carol.role, carol.active) == ("supervisor", False)
        assert current_revision(engine) == head_revision()
        engine.dispose()
    finally:
        postgres.drop(name)


def test_the_demo_login_is_created_once_and_kept_private(
    web_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    secret = tmp_path / "demo" / "desk-login.txt"
    first = demo_banner(web_settings, secret)
    password = secret.read_text().strip()
    assert first.endswith(f"(sign in as demo / {password})")
    assert f"http://127.0.0.1:{web_settings.desk.port}" in first
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert demo_banner(web_settings, secret) == first  # the same login next time
    with Session(engine) as db:
        assert db.scalars(select(User.role).where(User.username == "demo")).one() == "supervisor"
        assert db.scalars(select(LoginSession)).all() == []
    down = web_settings.model_copy(
        update={
            "desk": web_settings.desk.model_copy(
                update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
            )
        }
    )
    assert demo_banner(down, secret).startswith("case desk: not available")


def test_the_migrations_create_exactly_the_declared_tables(engine: Engine) -> None:
    """Alembic's own comparison of the migrated database with stream/desk/tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from stream.desk.tables import Base

    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
