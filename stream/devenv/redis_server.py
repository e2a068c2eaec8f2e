"""A real ``redis-server`` on loopback for `riskstream dev up` and the integration tests.

The binary is Debian's ``redis-server`` package (installed on demand by
:func:`ensure_redis_server_binary`). Debian builds it with TLS (``BUILD_TLS=yes``; the 7.0
package links libssl), so :class:`RedisServer` can also serve ``rediss://`` with a password,
which the security tests use. A build without TLS is detected at start and reported as
:class:`~stream.devenv.errors.TlsUnsupportedError`.

By default the server keeps no data on disk (``save ""``, ``appendonly no``): a restart starts
empty, like a fresh cache node, which is what riskstream's recovery has to cope with anyway.
``appendonly=True`` runs it as the compose stack runs production Redis (AOF, fsync every
second, ``noeviction``): a stop and start then keeps the data set, which is how the fault tests
take Redis away for a while without losing the context.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.devenv.certs import TlsFiles
from stream.devenv.errors import (
    DevEnvError,
    ServerStartError,
    TlsUnsupportedError,
    ToolNotFoundError,
)
from stream.devenv.process import LOOPBACK, ManagedProcess, require_free_ports, tail
from stream.settings import RedisSettings

log = logging.getLogger(__name__)

# The one documented bring-your-own variable of the dev environment and the test suite: when it
# names a reachable server, that server is used instead of starting one. Everything else is
# configured through stream.settings (RISKSTREAM_*).
REDIS_URL_ENV = "REDIS_URL"

_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def _no_service_autostart() -> Iterator[None]:
    """Keep Debian's maintainer scripts from starting the packaged service on 6379.

    A policy-rc.d that exits 101 is Debian's own switch for "install, do not start" (honoured
    by invoke-rc.d and deb-systemd-invoke); one already present -- container images ship one --
    is left alone.
    """
    if _POLICY_RC_D.exists():
        yield
        return
    _POLICY_RC_D.write_text(
        "#!/bin/sh\n# written by riskstream devenv during an install\nexit 101\n"
    )
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC_D.unlink(missing_ok=True)


def _apt_install(package: str) -> None:
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        raise ToolNotFoundError(
            f"`{package}` is missing and cannot be installed automatically here (needs root "
            f"and apt-get); install it with: sudo apt-get install -y {package}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [apt_get, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )

    log.info("installing %s with apt-get", package)
    with _no_service_autostart():
        result = run("install", "-y", "--no-install-recommends", package)
        if result.returncode != 0:  # most often stale package lists on a fresh image
            run("update")
            result = run("install", "-y", "--no-install-recommends", package)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ToolNotFoundError(f"apt-get install {package} failed:\n{output}")


def ensure_debian_tool(binary: str, package: str) -> Path:
    """``binary`` from PATH, installing Debian's ``package`` when it is missing."""
    found = shutil.which(binary)
    if found is None:
        _apt_install(package)
        found = shutil.which(binary)
        if found is None:
            raise ToolNotFoundError(f"apt-get installed {package} but `{binary}` is not on PATH")
    return Path(found)


def ensure_redis_server_binary() -> Path:
    """The ``redis-server`` executable; installs Debian's package when it is missing."""
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    if found is None:
        _apt_install("redis-server")
        found = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(found).exists():
            raise ToolNotFoundError("apt-get installed redis-server but no binary was found")
    return Path(found)


def resolve_redis_url(url: str | None = None, *, timeout_s: float = 2.0) -> str | None:
    """``url`` (default: ``$REDIS_URL``) if a server answers PING there, else None.

    Callers start a loopback server on None: "use the server at REDIS_URL when reachable,
    otherwise start one". A server that is reachable but refuses us (wrong password, TLS
    mismatch answered with an error) raises :class:`DevEnvError` instead -- someone pointed
    us at it on purpose, and silently testing against another server would hide that.
    """
    if url is None:
        url = os.environ.get(REDIS_URL_ENV)
    if not url:
        return None
    shown = RedisSettings(url=url).safe_url()
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as error:
        raise DevEnvError(f"{REDIS_URL_ENV}={shown} is not a valid Redis URL: {error}") from error
    try:
        with client:
            client.ping()
    except redis.AuthenticationError as error:  # a ConnectionError subclass: test it first
        raise DevEnvError(f"the Redis server at {shown} refused us: {error}") from error
    except (redis.ConnectionError, redis.TimeoutError) as error:
        log.info("no Redis reachable at %s (%s)", shown, error)
        return None
    except redis.RedisError as error:
        raise DevEnvError(f"the Redis server at {shown} refused us: {error}") from error
    return url


@dataclass(frozen=True)
class RedisTls:
    """Certificate files of a TLS-only Redis; client certificates are optional by default."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    require_client_cert: bool = False

    @classmethod
    def from_files(cls, files: TlsFiles, *, require_client_cert: bool = False) -> RedisTls:
        return cls(files.server_cert, files.server_key, files.ca_cert, require_client_cert)


_LITERAL_SAFE = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:@+=,"
)


def _quote(value: str) -> str:
    """A redis.conf string literal that survives any character (spaces, quotes, newlines).

    redis-server's config parser understands ``\\xHH`` inside double quotes; everything
    outside a conservative set is written that way.
    """
    body = "".join(chr(b) if b in _LITERAL_SAFE else f"\\x{b:02x}" for b in value.encode())
    return f'"{body}"'


class RedisServer:
    """One ``redis-server`` listening on 127.0.0.1 only, optionally with AUTH and/or TLS.

    With ``tls`` the plain port is closed (``port 0``) and ``port`` serves TLS only, so a
    client that forgets TLS fails instead of silently talking plaintext. The password goes
    into a 0600 config file, never on the command line where ``ps`` would show it.
    """

    def __init__(
        self,
        port: int,
        data_dir: Path,
        password: str | SecretStr | None = None,
        tls: RedisTls | None = None,
        *,
        binary: Path | None = None,
        startup_timeout_s: float = 20.0,
        stop_timeout_s: float = 10.0,
        appendonly: bool = False,
    ) -> None:
        self.port = port
        self.appendonly = appendonly
        self.data_dir = data_dir.resolve()
        self.password = SecretStr(password) if isinstance(password, str) else password
        self.tls = tls
        self.binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.config_file = self.data_dir / "redis.conf"
        self.log_file = self.data_dir / "redis.log"
        self._process = ManagedProcess(
            "redis-server",
            pid_file=self.data_dir / "redis.pid",
            log_file=self.log_file,
            marker=str(self.config_file),
        )

    @property
    def url(self) -> str:
        """``redis://`` or ``rediss://`` URL of database 0, without the password."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def redis_settings(self) -> RedisSettings:
        """riskstream's :class:`RedisSettings` pointing at this server."""
        return RedisSettings(
            url=self.url,
            password=self.password,
            ssl_ca_certs=self.tls.ca_file if self.tls else None,
        )

    def client(self, **overrides: Any) -> redis.Redis[bytes]:
        """A redis-py client for this server; close it (or use ``with``) when done."""
        options: dict[str, Any] = {
            "host": LOOPBACK,
            "port": self.port,
            "password": self.password.get_secret_value() if self.password else None,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
        }
        if self.tls:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca_file))
        options.update(overrides)
        return redis.Redis(**options)

    def is_running(self) -> bool:
        return self._process.is_alive()

    def _probe(self, timeout_s: float) -> redis.Redis[bytes]:
        # redis-py retries failed connections with backoff by default (seconds in all); a
        # probe wants the plain answer at once and does its own looping.
        return self.client(
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )

    def ping(self, timeout_s: float = 1.0) -> bool:
        """Whether the server answers PING (with our password and TLS settings) right now."""
        try:
            with self._probe(timeout_s) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def config(self) -> str:
        """The ``redis.conf`` text of this server."""
        lines = [
            "# Written by stream/devenv/redis_server.py on every start; edits are overwritten.",
            f"bind {LOOPBACK}",
            "protected-mode yes",
            f"dir {_quote(str(self.data_dir))}",
            'save ""',
            # AOF as in docker-compose.yml; a SIGTERM stop fsyncs it, so stop + start keeps all.
            *(
                ["appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"]
                if self.appendonly
                else ["appendonly no"]
            ),
            "daemonize no",
            # Keep argv as we gave it: the config path in /proc/<pid>/cmdline is how a later
            # `dev down` recognises this process (redis would otherwise retitle itself).
            "set-proc-title no",
            'logfile ""',  # stdout, which ManagedProcess appends to redis.log
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {_quote(str(self.tls.cert_file.resolve()))}",
                f"tls-key-file {_quote(str(self.tls.key_file.resolve()))}",
                f"tls-ca-cert-file {_quote(str(self.tls.ca_file.resolve()))}",
                f"tls-auth-clients {'yes' if self.tls.require_client_cert else 'no'}",
            ]
        else:
            lines.append(f"port {self.port}")
        if self.password:
            lines.append(f"requirepass {_quote(self.password.get_secret_value())}")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        # Created 0600 before anything is written: the file holds the password.
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(self.config())
        self.config_file.chmod(0o600)

    def start(self) -> None:
        """Start the server (or reuse ours if it runs already) and wait until it answers PING."""
        started = time.monotonic()
        if self.is_running():
            if (
                not self.config_file.is_file()
                or self.config_file.read_text("utf-8") != self.config()
            ):
                raise DevEnvError(
                    f"a redis-server from {self.data_dir} is already running (pid {self.pid}) "
                    "with a different configuration; stop it first"
                )
            log.info("reusing the running redis-server at %s (pid %s)", self.url, self.pid)
            # Not ours to kill if it does not answer (paused, or loading a large AOF): as
            # with the broker, the caller decides.
            self._wait_ready(started + self.startup_timeout_s)
            return
        binary = self.binary or ensure_redis_server_binary()
        require_free_ports("redis-server", self.port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._process.spawn([str(binary), str(self.config_file)])
        try:
            self._wait_ready(started + self.startup_timeout_s)
        except BaseException:
            self._process.kill()  # never leave a half-started server behind
            raise
        log.info(
            "redis-server up at %s in %.2f s (pid %s)",
            self.url,
            time.monotonic() - started,
            self.pid,
        )

    def _wait_ready(self, deadline: float) -> None:
        last_error = "no answer yet"
        while True:
            if not self._process.is_alive():
                last_lines = tail(self.log_file)
                if (
                    self.tls
                    and "FATAL CONFIG FILE ERROR" in last_lines
                    and "tls" in last_lines.lower()
                ):
                    raise TlsUnsupportedError(
                        "this redis-server was built without TLS support (BUILD_TLS=no); "
                        f"use a build with TLS. Its log:\n{last_lines}"
                    )
                raise ServerStartError(
                    f"redis-server exited during startup (exit code {self._process.exit_code()}); "
                    f"last lines of {self.log_file}:\n{last_lines}"
                )
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"redis-server at {self.url} did not answer PING within "
                    f"{self.startup_timeout_s:.0f} s (last: {last_error}); last lines of "
                    f"{self.log_file}:\n{tail(self.log_file)}"
                )
            try:
                with self._probe(0.5) as client:
                    client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError) as error:
                if isinstance(error, redis.AuthenticationError):
                    raise ServerStartError(
                        f"the server at {self.url} rejected our password: {error}"
                    ) from error
                last_error = str(error)
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (redis exits at once with persistence off), SIGKILL after the timeout."""
        self._process.stop(self.stop_timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._process.kill()

    def restart(self) -> None:
        """Stop and start again on the same port; the data set starts empty unless
        ``appendonly`` is on."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, commands hang (see :meth:`ManagedProcess.pause`)."""
        self._process.pause()

    def resume(self) -> None:
        self._process.resume()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
