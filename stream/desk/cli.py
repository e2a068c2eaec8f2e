"""`riskstream run desk` and `riskstream desk user|db ...`.

`run desk` serves the web pages and, in the same process, runs the alert intake and the outbox
relay (each can be switched off, e.g. to run several web servers and one intake elsewhere).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stream.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

desk_app = typer.Typer(help="The analyst case desk: users and database.", no_args_is_help=True)
user_app = typer.Typer(help="Desk users (analyst, supervisor, admin).", no_args_is_help=True)
db_app = typer.Typer(help="The desk's PostgreSQL schema.", no_args_is_help=True)
desk_app.add_typer(user_app, name="user")
desk_app.add_typer(db_app, name="db")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def desk(
    web: Annotated[bool, typer.Option("--web/--no-web", help="Serve the pages.")] = True,
    intake: Annotated[
        bool, typer.Option("--intake/--no-intake", help="Consume alerts into the database.")
    ] = True,
    relay: Annotated[
        bool, typer.Option("--relay/--no-relay", help="Publish dispositions as labels.")
    ] = True,
) -> None:
    """Run the case desk until SIGTERM/SIGINT: web pages on desk.host:desk.port (loopback by
    default), the alert intake and the label relay. Exits 2 when the database is unreachable
    or its schema is not this version's (run `riskstream desk db upgrade`)."""
    from stream.desk.database import make_engine, require_current_schema
    from stream.desk.errors import DeskError

    settings = load_settings()
    engine = make_engine(settings.desk, pool_size=8)
    try:
        require_current_schema(engine)
    except DeskError as error:
        raise _fail(str(error), 2) from error
    raise typer.Exit(serve(settings, engine, web=web, intake=intake, relay=relay))


def serve(settings: Settings, engine: Engine, *, web: bool, intake: bool, relay: bool) -> int:
    import uvicorn

    from stream.desk.app import create_app
    from stream.desk.intake import IntakeWorker
    from stream.desk.outbox import OutboxRelay
    from stream.pipeline.records import ScoredRecordStore
    from stream.redis_client import connect

    workers: list[IntakeWorker | OutboxRelay] = []
    if intake:
        workers.append(IntakeWorker(settings, engine))
    if relay:
        workers.append(OutboxRelay(settings, engine))
    failed = threading.Event()

    def run(worker: IntakeWorker | OutboxRelay) -> None:
        try:
            worker.run()
        except BaseException:
            log.exception("desk: %s stopped on an error", type(worker).__name__)
            failed.set()
            raise

    threads = [threading.Thread(target=run, args=(w,), name=type(w).__name__) for w in workers]
    for thread in threads:
        thread.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server: uvicorn.Server | None = None
    if web:
        records = ScoredRecordStore(
            connect(settings.redis),
            settings.context.namespace,
            settings.scorer.scored_ttl_days * 86_400,
        )
        app = create_app(settings, engine, records)
        config = uvicorn.Config(
            app,
            host=settings.desk.host,
            port=settings.desk.port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
        # In a thread of its own, uvicorn leaves the signals to us: a SIGTERM then ends the
        # process with status 0 after a clean shutdown, not with the re-raised signal.
        server = uvicorn.Server(config)
        web_thread = threading.Thread(target=server.run, name="web")
        threads.append(web_thread)
        web_thread.start()
        log.info("desk: serving http://%s:%d", settings.desk.host, settings.desk.port)
    try:
        while not stop.wait(0.5) and not failed.is_set():
            if server is not None and not threads[-1].is_alive():
                log.error("desk: the web server stopped")
                failed.set()
    finally:
        if server is not None:
            server.should_exit = True
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=settings.scorer.shutdown_timeout_s)
        engine.dispose()
    return 1 if failed.is_set() else 0


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the desk's tables to this version's schema (idempotent)."""
    from stream.desk.database import current_revision, head_revision, make_engine, upgrade
    from stream.desk.errors import DeskError

    engine = make_engine(load_settings().desk)
    try:
        before = current_revision(engine)
        upgrade(engine)
    except DeskError as error:
        raise _fail(str(error)) from error
    finally:
        engine.dispose()
    head = head_revision()
    typer.echo(f"desk schema at {head}" + ("" if before == head else f" (was {before or 'empty'})"))


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="Lower-case letters, digits, . _ -")],
    role: Annotated[str, typer.Option(help="analyst, supervisor or admin.")] = "analyst",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a desk user (the password is asked for, or read from stdin; 12 characters at least)."""
    _user_change(lambda db: _add(db, username, _password(password_stdin), role))
    typer.echo(f"user {username} added as {role}")


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable a user: they cannot sign in, and their open sessions end at once."""
    from stream.desk.auth import set_active

    _user_change(lambda db: set_active(db, username, False))
    typer.echo(f"user {username} disabled")


def _add(db: Session, username: str, password: str, role: str) -> None:
    from stream.desk.auth import add_user

    add_user(db, username, password, role)


def _user_change(apply: Callable[[Session], object]) -> None:
    from sqlalchemy.orm import Session

    from stream.desk.database import guarded, make_engine, require_current_schema
    from stream.desk.errors import DeskError

    engine = make_engine(load_settings().desk)
    try:
        require_current_schema(engine)
        with guarded(), Session(engine) as db, db.begin():
            apply(db)
    except DeskError as error:
        raise _fail(str(error)) from error
    finally:
        engine.dispose()


def demo_banner(settings: Settings, secret_file: Path) -> str:
    """The line `riskstream demo` prints about the desk: its URL and a login (a supervisor named
    ``demo``, created on first use with a random password kept in ``secret_file``, 0600, so
    later demos print the same one)."""
    import secrets

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from stream.desk.auth import add_user
    from stream.desk.database import guarded, make_engine
    from stream.desk.errors import DeskError
    from stream.desk.tables import User

    url = f"http://{settings.desk.host}:{settings.desk.port}"
    engine = make_engine(settings.desk)
    try:
        with guarded(), Session(engine) as db, db.begin():
            if db.scalar(select(User.id).where(User.username == "demo")) is not None:
                known = secret_file.is_file()
                password = secret_file.read_text("utf-8").strip() if known else None
                return f"case desk: {url}  (sign in as demo / {password or '(password lost)'})"
            password = secrets.token_urlsafe(12)
            add_user(db, "demo", password, "supervisor")
    except DeskError as error:
        return f"case desk: not available ({error})"
    finally:
        engine.dispose()
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.touch(mode=0o600)
    secret_file.write_text(password + "\n", "utf-8")
    return f"case desk: {url}  (sign in as demo / {password})"
