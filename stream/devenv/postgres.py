"""A real PostgreSQL server on loopback for `riskstream dev up` and the desk's tests.

The binaries are Debian's ``postgresql`` package (installed on demand). PostgreSQL refuses to
run as root, so when we are root every server command (``initdb``, ``pg_ctl``) runs as the
``postgres`` system user through ``setpriv`` (which execs, unlike ``runuser``, so no PAM
session sits in between), and the server's directory is owned by that user.

The cluster is for development: it listens on 127.0.0.1 only and trusts loopback connections
(like the dev redis-server, it has no password); production and docker-compose use a password
in ``desk.database_url``. ``pg_ctl`` daemonises the postmaster in its own session, so the
server outlives `dev up`; ``postmaster.pid`` in the data directory finds it again.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from stream.devenv.errors import DevEnvError, ServerStartError, ToolNotFoundError
from stream.devenv.process import LOOPBACK, require_free_ports, tail
from stream.devenv.redis_server import _apt_install

log = logging.getLogger(__name__)

POSTGRES_USER = "postgres"
DESK_ROLE = "riskstream"
DESK_DATABASE = "riskstream"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")


def find_postgres_bin() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<major>/bin`` that has initdb and pg_ctl."""
    candidates = [
        path.parent
        for path in _DEBIAN_ROOT.glob("*/bin/initdb")
        if (path.parent / "pg_ctl").exists() and path.parent.parent.name.isdigit()
    ]
    return max(candidates, key=lambda p: int(p.parent.name), default=None)


def ensure_postgres_binaries() -> Path:
    """Debian's PostgreSQL ``bin`` directory, installing the ``postgresql`` package if needed."""
    found = find_postgres_bin()
    if found is None:
        _apt_install("postgresql")
        found = find_postgres_bin()
        if found is None:
            raise ToolNotFoundError(
                f"apt-get installed postgresql but no initdb under {_DEBIAN_ROOT}"
            )
    return found


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ToolNotFoundError("setpriv (util-linux) is needed to run PostgreSQL as its user")
    return [setpriv, f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}", "--init-groups", *argv]


class PostgresServer:
    """One PostgreSQL cluster under ``base_dir`` (``data/``, ``postgres.log``, the socket)."""

    def __init__(
        self,
        port: int,
        base_dir: Path,
        *,
        bin_dir: Path | None = None,
        durable: bool = True,
        startup_timeout_s: float = 60.0,
    ) -> None:
        """``durable=False`` turns fsync off: for throwaway test clusters, where an operating
        system crash is not what is being tested (a killed server still recovers from WAL)."""
        self.port = port
        self.base_dir = base_dir.resolve()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.bin_dir = bin_dir
        self.durable = durable
        self.startup_timeout_s = startup_timeout_s

    # -- addresses -------------------------------------------------------------------------

    def url(self, database: str = DESK_DATABASE, user: str = DESK_ROLE) -> str:
        """The SQLAlchemy URL of ``database`` as ``user`` (loopback is trusted: no password)."""
        return f"postgresql+psycopg://{user}@{LOOPBACK}:{self.port}/{database}"

    def _conninfo(self, database: str = "postgres") -> str:
        return f"host={LOOPBACK} port={self.port} user={POSTGRES_USER} dbname={database}"

    # -- life cycle ------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        if self.bin_dir is None:
            self.bin_dir = ensure_postgres_binaries()
        return str(self.bin_dir / name)

    def _run(self, argv: list[str], what: str, timeout_s: float = 120.0) -> None:
        result = subprocess.run(
            _as_postgres(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=self.base_dir,  # the postgres user may not be able to read our cwd
        )
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise ServerStartError(
                f"{what} failed (exit {result.returncode}):\n{output}\n"
                f"last lines of {self.log_file}:\n{tail(self.log_file)}"
            )

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam(POSTGRES_USER)
            for path in (self.base_dir, *self.base_dir.rglob("*")):
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
            # The postgres user must be able to reach base_dir through its parents.
            for parent in self.base_dir.parents:
                mode = os.stat(parent)
                searchable = 0o100 if mode.st_uid == user.pw_uid else 0o001
                if not mode.st_mode & searchable:
                    raise DevEnvError(
                        f"PostgreSQL runs as the '{POSTGRES_USER}' user, which cannot enter "
                        f"{parent} (no search permission); put the dev home elsewhere"
                    )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def init(self) -> None:
        """``initdb`` once: UTF-8, C collation, loopback connections trusted."""
        self._prepare_dirs()
        if self.initialized():
            return
        self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                POSTGRES_USER,
                "--encoding=UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=trust",
            ],
            "initdb",
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (from ``postmaster.pid``, checked in /proc)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, PermissionError, ProcessLookupError):
            return None
        return pid if str(self.data_dir).encode() in cmdline else None

    def answers(self, timeout_s: float = 2.0) -> bool:
        try:
            with psycopg.connect(self._conninfo(), connect_timeout=max(1, int(timeout_s))):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        """Init if needed and start (or reuse a running server of ours); wait until it answers."""
        self.init()
        if self.pid is not None:
            log.info("reusing the running PostgreSQL at port %d (pid %s)", self.port, self.pid)
            self._wait_ready(time.monotonic() + self.startup_timeout_s)
            return
        require_free_ports("PostgreSQL", self.port)
        options = [
            f"-c listen_addresses={LOOPBACK}",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.base_dir}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        started = time.monotonic()
        self._run(
            [
                self._bin("pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(self.startup_timeout_s)),
                "-o",
                " ".join(options),
            ],
            "pg_ctl start",
            timeout_s=self.startup_timeout_s + 10,
        )
        self._wait_ready(started + self.startup_timeout_s)
        log.info(
            "PostgreSQL up at %s:%d in %.1f s", LOOPBACK, self.port, time.monotonic() - started
        )

    def _wait_ready(self, deadline: float) -> None:
        while not self.answers():
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"PostgreSQL at port {self.port} did not answer in time; last lines of "
                    f"{self.log_file}:\n{tail(self.log_file)}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, their transactions rolled back."""
        if self.pid is None:
            return
        self._run(
            [self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"],
            "pg_ctl stop",
        )

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; the next start recovers from the WAL."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- databases -------------------------------------------------------------------------

    def ensure_database(self, database: str = DESK_DATABASE, owner: str = DESK_ROLE) -> str:
        """Create the login role ``owner`` and the database it owns, when missing; its URL."""
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            if (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
                is None
            ):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if exists.fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(owner)
                    )
                )
        return self.url(database, owner)

    def drop_database(self, database: str) -> None:
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
