"""`riskstream dev up|down|status`: the local Kafka broker, Redis and PostgreSQL for development.

Everything lives under ``<settings.home>/dev/`` (``kafka/``, ``redis/``, ``postgres/``,
``devenv.json``); the
broker's jars are cached in ``<settings.home>/kafka/libs``. Mounted by ``stream/cli.py`` as::

    app.add_typer(stream.devenv.cli.app, name="dev")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stream.devenv.errors import DevEnvError
from stream.devenv.jars import ensure_kafka_jars, kafka_version
from stream.devenv.kafka import KafkaBroker
from stream.devenv.postgres import PostgresServer, ensure_postgres_binaries
from stream.devenv.redis_server import (
    REDIS_URL_ENV,
    RedisServer,
    ensure_debian_tool,
    ensure_redis_server_binary,
    resolve_redis_url,
)
from stream.errors import StreamError
from stream.kafka.topics import ensure_topics, standard_topics
from stream.settings import RedisSettings, load_settings

app = typer.Typer(
    help="Run a real local Kafka broker (KRaft, 127.0.0.1) and redis-server for development.",
    no_args_is_help=True,
)

_STATE_FILE = "devenv.json"

KafkaPort = Annotated[int, typer.Option(help="Kafka client (PLAINTEXT) port.")]
ControllerPort = Annotated[int, typer.Option(help="KRaft controller port.")]
RedisPort = Annotated[int, typer.Option(help="redis-server port (when REDIS_URL is not used).")]
PostgresPort = Annotated[int, typer.Option(help="PostgreSQL port (the case desk's database).")]


def _dev_dir() -> Path:
    return load_settings().home.resolve() / "dev"


def _read_state(dev_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((dev_dir / _STATE_FILE).read_text("utf-8"))
    except FileNotFoundError:
        return {}
    return state


def _broker(dev_dir: Path, port: int, controller_port: int) -> KafkaBroker:
    libs = load_settings().home.resolve() / "kafka" / "libs"
    return KafkaBroker(dev_dir / "kafka", libs, port=port, controller_port=controller_port)


def _recorded_broker(dev_dir: Path, state: dict[str, Any]) -> KafkaBroker:
    """The broker a previous `up` recorded in the state file (default ports without one)."""
    kafka_state = state.get("kafka", {})
    return _broker(dev_dir, kafka_state.get("port", 9092), kafka_state.get("controller_port", 9093))


def _fail(error: StreamError) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


@app.command()
def install(
    test_tools: Annotated[
        bool,
        typer.Option(
            help="Also the tools only the test suite uses: kcat (the README's alert-reading "
            "recipe is run by a test), promtool (checks the Prometheus config), and chromium "
            "with chromium-driver (the case desk's browser tests)."
        ),
    ] = False,
) -> None:
    """Install what the servers need: Kafka jars from Maven Central, Debian's redis-server and
    postgresql.

    Idempotent and cached: a second run only checks. `make setup` runs it so a fresh machine
    fails early, with a clear message, rather than inside the first test that needs a server.
    """
    home = load_settings().home.resolve()
    try:
        libs = ensure_kafka_jars(home)
        redis_binary = ensure_redis_server_binary()
        postgres_bin = ensure_postgres_binaries()
        tools = (
            {"kcat": ensure_debian_tool("kcat", "kcat"),
             "promtool": ensure_debian_tool("promtool", "prometheus"),
             "chromium": ensure_debian_tool("chromium", "chromium"),
             "chromedriver": ensure_debian_tool("chromedriver", "chromium-driver")}
            if test_tools
            else {}
        )  # fmt: skip
    except DevEnvError as error:
        raise _fail(error) from error
    typer.echo(f"kafka {kafka_version()} jars: {libs}")
    typer.echo(f"redis-server: {redis_binary}")
    typer.echo(f"postgresql: {postgres_bin}")
    for name, path in tools.items():
        typer.echo(f"{name}: {path}")


@app.command()
def up(
    kafka_port: KafkaPort = 9092,
    controller_port: ControllerPort = 9093,
    redis_port: RedisPort = 6379,
    postgres_port: PostgresPort = 5432,
) -> None:
    """Start the broker, Redis and PostgreSQL (reusing healthy running ones), create
    riskstream's topics, the desk's database and its tables.

    Redis: the server named by $REDIS_URL is used when it answers PING.
    Otherwise redis-server is started on 127.0.0.1 (installing Debian's package if needed).
    """
    settings = load_settings()
    home = settings.home.resolve()
    dev_dir = home / "dev"
    try:
        external_url = resolve_redis_url()
    except DevEnvError as error:  # REDIS_URL names a server that refuses us
        raise _fail(error) from error
    external = external_url is not None
    # Recorded before anything starts, so `down` and `status` find what a failed `up` left.
    state = {
        "kafka": {"port": kafka_port, "controller_port": controller_port},
        "redis": {"external": True} if external else {"port": redis_port},
        "postgres": {"port": postgres_port},
    }
    dev_dir.mkdir(parents=True, exist_ok=True)
    (dev_dir / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", "utf-8")
    try:
        typer.echo(f"Kafka {kafka_version()} jars: {ensure_kafka_jars(home)}")
        broker = _broker(dev_dir, kafka_port, controller_port)
        broker.start()
        redis_pid: int | None = None
        if external_url is not None:
            redis_url = external_url
        else:
            redis_server = RedisServer(
                redis_port, dev_dir / "redis", binary=ensure_redis_server_binary()
            )
            redis_server.start()
            redis_url, redis_pid = redis_server.url, redis_server.pid
        created = ensure_topics(broker.kafka_settings(), standard_topics(settings.topics))
        postgres = PostgresServer(postgres_port, dev_dir / "postgres")
        postgres.start()
        desk_url = postgres.ensure_database()
        _upgrade_desk(desk_url)
    except StreamError as error:
        raise _fail(error) from error

    typer.echo(f"Kafka  {broker.bootstrap_servers}  (pid {broker.pid}, data {broker.data_dir})")
    if not external:
        typer.echo(f"Redis  {redis_url}  (pid {redis_pid})")
    else:
        typer.echo(f"Redis  {RedisSettings(url=redis_url).safe_url()}  (from ${REDIS_URL_ENV})")
    typer.echo(
        f"PostgreSQL  127.0.0.1:{postgres_port}  (pid {postgres.pid}, data {postgres.data_dir})"
    )
    typer.echo(f"Topics created: {', '.join(created) if created else 'none (all existed)'}")
    typer.echo(f"export RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
    if not external:
        typer.echo(f"export RISKSTREAM_REDIS__URL={redis_url}")
    else:
        typer.echo(f'export RISKSTREAM_REDIS__URL="${REDIS_URL_ENV}"')
    typer.echo(f"export RISKSTREAM_DESK__DATABASE_URL={desk_url}")


def _upgrade_desk(url: str) -> None:
    from stream.desk.database import make_engine, upgrade
    from stream.settings import DeskSettings

    engine = make_engine(DeskSettings(database_url=url))
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@app.command()
def down() -> None:
    """Stop the broker, redis-server and PostgreSQL started by `up`.

    Kafka's data stays in <home>/dev/kafka and the desk's database in <home>/dev/postgres: the
    next `up` has the same topics, messages, alerts and users.
    A server from $REDIS_URL is not touched.
    """
    dev_dir = _dev_dir()
    state = _read_state(dev_dir)
    broker = _recorded_broker(dev_dir, state)
    redis_state = state.get("redis", {})
    redis_server = RedisServer(redis_state.get("port", 6379), dev_dir / "redis")
    servers: list[tuple[str, KafkaBroker | RedisServer]] = [("Kafka", broker)]
    if redis_state.get("external"):
        typer.echo(f"Redis: from ${REDIS_URL_ENV}, not touched")
    else:
        servers.append(("Redis", redis_server))
    for name, server in servers:
        pid = server.pid
        server.stop()
        typer.echo(f"{name}: stopped (pid {pid})" if pid else f"{name}: was not running")
    postgres = _recorded_postgres(dev_dir, state)
    pid = postgres.pid
    try:
        postgres.stop()
    except StreamError as error:
        raise _fail(error) from error
    typer.echo(f"PostgreSQL: stopped (pid {pid})" if pid else "PostgreSQL: was not running")


def _recorded_postgres(dev_dir: Path, state: dict[str, Any]) -> PostgresServer:
    return PostgresServer(state.get("postgres", {}).get("port", 5432), dev_dir / "postgres")


def is_up() -> bool:
    """Whether the broker of a previous `up` runs and answers (the demo reuses it then)."""
    dev_dir = _dev_dir()
    broker = _recorded_broker(dev_dir, _read_state(dev_dir))
    return broker.pid is not None and broker.answers()


@app.command()
def status() -> None:
    """Show whether the broker, PostgreSQL and redis-server of `up` run and answer."""
    dev_dir = _dev_dir()
    state = _read_state(dev_dir)
    broker = _recorded_broker(dev_dir, state)
    if broker.pid is None:
        typer.echo(f"Kafka  stopped (data {broker.data_dir})")
    else:
        health = "answering" if broker.answers() else "NOT answering"
        typer.echo(f"Kafka  {broker.bootstrap_servers}  pid {broker.pid}, {health}")
    postgres = _recorded_postgres(dev_dir, state)
    if postgres.pid is None:
        typer.echo("PostgreSQL  stopped")
    else:
        health = "answering" if postgres.answers() else "NOT answering"
        typer.echo(f"PostgreSQL  127.0.0.1:{postgres.port}  pid {postgres.pid}, {health}")
    redis_state = state.get("redis", {})
    if redis_state.get("external"):
        typer.echo(f"Redis  external (${REDIS_URL_ENV}), not managed here")
        return
    redis_server = RedisServer(redis_state.get("port", 6379), dev_dir / "redis")
    if redis_server.pid is None:
        typer.echo("Redis  stopped")
    else:
        health = "answering" if redis_server.ping() else "NOT answering"
        typer.echo(f"Redis  {redis_server.url}  pid {redis_server.pid}, {health}")
