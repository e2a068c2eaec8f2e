"""A detached server process with a pid file and a log file: what Kafka and Redis share.

The servers must outlive the command that started them (``riskstream dev up`` returns while the
broker keeps running), so each runs in its own session and process group with its output sent
to a file, never to a pipe nobody drains. A later command (``dev down``) finds it again through
the pid file. Because pids are recycled, a pid from a file is only trusted when
``/proc/<pid>/cmdline`` still contains a marker unique to our server (its config file path):
signalling whatever process inherited the number would be far worse than leaving a stale file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from stream.devenv.errors import PortInUseError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_POLL_S = 0.05


def free_ports(count: int = 1) -> list[int]:
    """Ports that nothing listens on at the moment, distinct from each other (for tests).

    All sockets stay open until every port is picked, so the kernel cannot hand out one twice.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``127.0.0.1:port`` now.

    SO_REUSEADDR mirrors what Kafka and Redis set, so a socket of a just-stopped server that is
    still in TIME_WAIT does not count as taken, while any listener (also on 0.0.0.0) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def require_free_ports(name: str, *ports: int) -> None:
    """Raise :class:`PortInUseError` unless every port is free."""
    taken = [port for port in ports if not port_is_free(port)]
    if taken:
        raise PortInUseError(
            f"cannot start {name}: port(s) {', '.join(map(str, taken))} on {LOOPBACK} are in "
            "use by another process (another broker or redis-server? `ss -ltnp` shows which)"
        )


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that it does not exist (for error messages)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    """An exited child whose parent has not reaped it yet still answers ``kill(pid, 0)``."""
    stat = _read_proc(pid, "stat")
    # The state letter follows the command name in parentheses, which may itself hold spaces.
    return stat is not None and stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


class ManagedProcess:
    """One server process: spawn it detached, find it again later, stop it firmly.

    ``marker`` must occur in the process's command line (the path of its config file is ideal);
    it is how a pid read back from ``pid_file`` is told apart from a recycled pid.
    """

    def __init__(self, name: str, *, pid_file: Path, log_file: Path, marker: str) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file
        self.marker = marker
        # Set only in the process that spawned the server, which must reap it (waitpid) to
        # read its exit status and leave no zombie. A `dev down` in another process works
        # from the pid file alone; the orphaned server is reaped by init there.
        self._child: int | None = None
        self._exit_code: int | None = None

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
        """Start ``argv`` (absolute paths only) in a new session, output appended to the log.

        ``os.posix_spawn`` rather than ``subprocess.Popen``: a Popen object dropped while its
        child still runs -- exactly the case for `dev up` -- emits a ResourceWarning, which the
        test suite turns into an error. The child inherits no descriptor of ours (PEP 446).
        """
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(f"\n--- {self.name} starting at {time.strftime('%F %T')} ---\n".encode())
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(env) if env is not None else dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(self.log_file), os.O_WRONLY | os.O_APPEND, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,  # own session and process group: a Ctrl-C in the shell spares it
        )
        self._child, self._exit_code = pid, None
        self.pid_file.write_text(f"{pid}\n")
        log.debug("%s started as pid %d: %s", self.name, pid, " ".join(argv))
        return pid

    def _reap(self) -> None:
        """Collect our child's exit status if it has exited (never blocks)."""
        if self._child is None:
            return
        try:
            pid, status = os.waitpid(self._child, os.WNOHANG)
        except ChildProcessError:  # already reaped elsewhere: gone, status unknown
            pid, status = self._child, 0
        if pid != 0:
            self._exit_code = os.waitstatus_to_exitcode(status)
            self._child = None

    @property
    def pid(self) -> int | None:
        """The pid of our running server, or None when it is not running."""
        self._reap()
        if self._child is not None:
            return self._child
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_zombie(pid):
            # Exited (a zombie's cmdline reads empty, so check this first). If it is a child of
            # this process -- spawned by another object, as in `dev up` then `dev down` in one
            # test -- reap it so no zombie lingers; waitpid refuses anyone else's process.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return None
        cmdline = _read_proc(pid, "cmdline")
        if cmdline is None or self.marker.encode() not in cmdline:
            return None
        return pid

    def is_alive(self) -> bool:
        return self.pid is not None

    def exit_code(self) -> int | None:
        """The exit status once a server spawned by this object has exited, else None."""
        self._reap()
        return self._exit_code

    def _wait_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.pid is not None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        # The server leads its own process group, so this also reaches any child it forked.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM and wait up to ``timeout_s`` for a clean exit; SIGKILL if it does not come."""
        pid = self.pid
        if pid is not None:
            started = time.monotonic()
            self._signal_group(pid, signal.SIGTERM)
            if self._wait_gone(timeout_s):
                elapsed = time.monotonic() - started
                log.info("%s (pid %d) stopped in %.1f s", self.name, pid, elapsed)
            else:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL",
                    self.name,
                    pid,
                    timeout_s,
                )
                self._kill_and_wait(pid)
        self.pid_file.unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP: the server freezes with its sockets open, as a host under a long GC pause,
        a VM migration or a stalled disk looks to its clients (connections hang, nothing is
        refused). Fault tests use it; :meth:`resume` undoes it."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"{self.name} is not running; nothing to pause")
        self._signal_group(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        pid = self.pid
        if pid is not None:
            self._signal_group(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL without a chance to clean up: what a crash or an OOM kill looks like."""
        pid = self.pid
        if pid is not None:
            self._kill_and_wait(pid)
            log.info("%s (pid %d) killed", self.name, pid)
        self.pid_file.unlink(missing_ok=True)

    def _kill_and_wait(self, pid: int) -> None:
        self._signal_group(pid, signal.SIGKILL)
        if not self._wait_gone(10.0):
            raise RuntimeError(f"{self.name} (pid {pid}) survived SIGKILL for 10 s")
