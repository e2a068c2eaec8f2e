"""A real single-node Apache Kafka broker for `riskstream dev up` and the integration tests.

No Docker engine and no Kafka distribution are assumed: the broker's jars come from Maven
Central through ``kafka-pom.xml`` (see :mod:`stream.devenv.jars`) and run on the system's Java
17+. The node is a KRaft "combined" server -- broker and controller in one JVM -- with every
replication factor at 1 so transactions and consumer groups work on a single node, and it
listens on 127.0.0.1 only.

Layout of a broker's ``data_dir``::

    server.properties   the broker config (rewritten on every start)
    log4j2.properties   sends the broker's log to server.log
    server.log          the broker's own log -- read this when something is off
    stdout.log          JVM stdout/stderr: crashes before logging starts end up here
    kafka.pid           pid of the running JVM
    kraft/              log.dirs: topic data and the KRaft metadata log; survives restarts
    sasl_ssl.pem        with a SASL_SSL listener: the server's private key + certificate (0600)

With :class:`SaslSslListener` the broker opens a second, authenticated and encrypted listener
beside PLAINTEXT (which the broker itself, admin set-up and the health probe keep using):
TLS from PEM files, SASL/PLAIN users from the constructor. PLAIN rather than SCRAM because its
users live in the listener's JAAS config, so they exist from the first start without a format-
time step or an admin round trip; over TLS the password is as protected as SCRAM's proof. The
JAAS config holds the passwords, so ``server.properties`` is written 0600.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from stream.devenv.certs import TlsFiles
from stream.devenv.errors import DevEnvError, ServerStartError
from stream.devenv.jars import ensure_kafka_jars, find_java, kafka_version
from stream.devenv.process import LOOPBACK, ManagedProcess, require_free_ports, tail
from stream.settings import KafkaSettings

__all__ = ["KafkaBroker", "SaslSslListener", "ensure_kafka_jars", "kafka_version"]

log = logging.getLogger(__name__)

# Kafka's own kafka-run-class.sh flags, minus the 1 GiB heap: a dev broker with a handful of
# small topics fits in 512 MiB, which matters on 2-core CI machines running a model beside it.
_JVM_FLAGS = (
    "-Xmx512m",
    "-Xms256m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",  # die loudly instead of limping on
    "-Djava.awt.headless=true",
)


def _random_cluster_id() -> str:
    """A KRaft cluster id, formatted as Kafka's ``Uuid.toString()``: 22 base64url characters.

    Made here rather than with ``kafka-storage random-uuid`` to save a JVM start (~1 s). Kafka
    avoids ids starting with '-' because command-line parsers take them for options.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _read_properties(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


_JAAS_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~+=/@!")


# A name also becomes part of a JAAS option key (user_<name>=...).
_USER_NAME_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes.

    The value passes through two parsers (java.util.Properties, then JAAS), each with its own
    escapes; rather than escape twice, only characters neither treats specially are accepted -
    enough for user names and generated passwords (``secrets.token_urlsafe``)."""
    if not value or not set(value) <= _JAAS_SAFE:
        raise DevEnvError(
            "SASL user names and passwords of the dev broker may only hold letters, digits and "
            "_ . - ~ + = / @ !"
        )
    return f'"{value}"'


@dataclass(frozen=True)
class SaslSslListener:
    """A SASL_SSL listener on ``port``: TLS with ``tls``'s server certificate (no client
    certificates), SASL/PLAIN with ``users`` (name -> password)."""

    port: int
    tls: TlsFiles
    users: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.users:
            raise DevEnvError("a SASL_SSL listener needs at least one user")
        for name, password in self.users.items():  # fail at construction, not at start
            if not name or not set(name) <= _USER_NAME_SAFE:
                raise DevEnvError(f"SASL user name {name!r}: only letters, digits, _ . -")
            _jaas_quote(password)


class KafkaBroker:
    """One KRaft broker+controller JVM bound to 127.0.0.1, with its data in ``data_dir``.

    ``start()`` is idempotent: it reuses a healthy broker already running from the same
    ``data_dir`` (found through its pid file), so `dev up` twice does not start two. Data --
    topics, messages, committed offsets, transactions -- lives in ``data_dir/kraft`` and
    survives :meth:`stop`, :meth:`restart` and even :meth:`kill`.
    """

    def __init__(
        self,
        data_dir: Path,
        libs_dir: Path,
        *,
        port: int = 9092,
        controller_port: int = 9093,
        startup_timeout_s: float = 90.0,
        stop_timeout_s: float = 30.0,
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.libs_dir = libs_dir.resolve()
        self.port = port
        self.controller_port = controller_port
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.properties_file = self.data_dir / "server.properties"
        self.log4j_file = self.data_dir / "log4j2.properties"
        self.server_log = self.data_dir / "server.log"
        self.log_dir = self.data_dir / "kraft"
        self.sasl_ssl = sasl_ssl
        self.sasl_ssl_keystore = self.data_dir / "sasl_ssl.pem"
        self._process = ManagedProcess(
            "kafka broker",
            pid_file=self.data_dir / "kafka.pid",
            log_file=self.data_dir / "stdout.log",
            marker=str(self.properties_file),
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings to reach this broker."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def kafka_settings(self) -> KafkaSettings:
        """riskstream's :class:`KafkaSettings` pointing at this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)

    def sasl_ssl_settings(self, username: str, password: str | None = None) -> KafkaSettings:
        """:class:`KafkaSettings` for the SASL_SSL listener as ``username`` (with the user's
        own password unless ``password`` overrides it, e.g. to try a wrong one)."""
        if self.sasl_ssl is None:
            raise DevEnvError("this broker has no SASL_SSL listener")
        return KafkaSettings(
            bootstrap_servers=f"{LOOPBACK}:{self.sasl_ssl.port}",
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username=username,
            sasl_password=SecretStr(
                password if password is not None else self.sasl_ssl.users[username]
            ),
            ssl_ca_location=self.sasl_ssl.tls.ca_cert,
        )

    def is_running(self) -> bool:
        """Whether our broker process is alive (not whether it answers; see :meth:`start`)."""
        return self._process.is_alive()

    def properties(self) -> str:
        """The ``server.properties`` text of this broker."""
        listeners = (
            f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}"
        )
        advertised = f"PLAINTEXT://{LOOPBACK}:{self.port}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        sasl_lines: list[str] = []
        if self.sasl_ssl is not None:
            listeners += f",SASL_SSL://{LOOPBACK}:{self.sasl_ssl.port}"
            advertised += f",SASL_SSL://{LOOPBACK}:{self.sasl_ssl.port}"
            protocols += ",SASL_SSL:SASL_SSL"
            sasl_lines = self._sasl_ssl_properties(self.sasl_ssl)
        return "\n".join(
            [
                "# Written by stream/devenv/kafka.py on every start; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                # A static one-voter quorum rather than `format --standalone`: the dynamic
                # quorum records the controller's endpoint in the metadata log, tying the data
                # dir to its controller port forever; static voters come from this file.
                f"controller.quorum.voters=1@{LOOPBACK}:{self.controller_port}",
                f"listeners={listeners}",
                f"advertised.listeners={advertised}",
                f"listener.security.protocol.map={protocols}",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                f"log.dirs={self.log_dir}",
                # riskstream creates its topics explicitly (stream/kafka/topics.py); a typo in
                # a topic name must fail, not silently create a new topic.
                "auto.create.topics.enable=false",
                "num.partitions=1",
                # One node: every internal topic must make do with one replica, or consumer
                # groups, transactions and share groups never become available.
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                # Fewer partitions than the default 50 make the first group join and the first
                # init_transactions() create their internal topic in a fraction of the time.
                "offsets.topic.num.partitions=5",
                "transaction.state.log.num.partitions=5",
                # Tests join a group and expect messages at once, not after a 3 s pause.
                "group.initial.rebalance.delay.ms=0",
                # After a kill -9 the restarted node must wait out its own dead incarnation's
                # session before it may register again: 9 s by default, 3 s here. Heartbeats
                # (default 2 s) must come well within the session.
                "broker.heartbeat.interval.ms=500",
                "broker.session.timeout.ms=3000",
                *sasl_lines,
                "",
            ]
        )

    def _sasl_ssl_properties(self, listener: SaslSslListener) -> list[str]:
        users = " ".join(
            f"user_{name}={_jaas_quote(password)}" for name, password in listener.users.items()
        )
        # PLAIN's login module wants the broker's own username/password too, although it only
        # uses them for inter-broker traffic (which stays on PLAINTEXT here): give it a user.
        own_name, own_password = next(iter(listener.users.items()))
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f"username={_jaas_quote(own_name)} password={_jaas_quote(own_password)} {users};"
        )
        prefix = "listener.name.sasl_ssl."
        return [
            "sasl.enabled.mechanisms=PLAIN",
            f"{prefix}plain.sasl.jaas.config={jaas}",
            # PEM straight from generate_tls_files(): one file with the PKCS#8 key and the
            # certificate (Kafka >= 2.7 reads PEM key stores; no keytool, no JKS passwords).
            f"{prefix}ssl.keystore.type=PEM",
            f"{prefix}ssl.keystore.location={self.sasl_ssl_keystore}",
            f"{prefix}ssl.client.auth=none",
        ]

    def _write_private(self, path: Path, text: str) -> None:
        # Created 0600 before anything is written: the text holds passwords or a private key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        path.chmod(0o600)

    def _log4j2_config(self) -> str:
        # Kafka 4 logs through log4j2; a size cap keeps a long-lived dev broker from filling
        # the disk.
        return "\n".join(
            [
                "status = warn",
                # Log4j's own shutdown hook would race Kafka's and cut the log before the
                # broker's last shutdown lines; lines are flushed one by one anyway.
                "shutdownHook = disable",
                "appender.file.type = RollingFile",
                "appender.file.name = file",
                f"appender.file.fileName = {self.server_log}",
                f"appender.file.filePattern = {self.server_log}.%i",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                "appender.file.policies.size.size = 20MB",
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.max = 3",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = file",
                # The request logger is very chatty at INFO on a busy broker.
                "logger.request.name = kafka.request.logger",
                "logger.request.level = WARN",
                "",
            ]
        )

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        return [
            find_java(),
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _cluster_id(self) -> str | None:
        meta = self.log_dir / "meta.properties"
        return _read_properties(meta).get("cluster.id") if meta.is_file() else None

    def _format_once(self) -> str:
        """Format ``log.dirs`` for KRaft on first start; later starts reuse the data."""
        existing = self._cluster_id()
        if existing is not None:
            return existing
        cluster_id = _random_cluster_id()
        argv = self._java_argv(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties_file)
        )
        result = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=120
        )
        if result.returncode != 0:
            # A half-formatted directory would make every later start fail differently.
            shutil.rmtree(self.log_dir, ignore_errors=True)
            raise ServerStartError(
                f"formatting {self.log_dir} for KRaft failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        log.info("formatted %s (cluster id %s)", self.log_dir, cluster_id)
        return cluster_id

    def start(self) -> None:
        """Start the broker (or reuse the running one) and return once it answers metadata."""
        started = time.monotonic()
        if self.is_running():
            if (
                not self.properties_file.is_file()
                or self.properties_file.read_text("utf-8") != self.properties()
            ):
                raise DevEnvError(
                    f"a broker from {self.data_dir} is already running (pid {self.pid}) with a "
                    "different configuration; stop it first"
                )
            log.info("reusing the running broker at %s (pid %s)", self.bootstrap_servers, self.pid)
            self._wait_ready(self._cluster_id(), started + self.startup_timeout_s)
            return
        extra_ports = (self.sasl_ssl.port,) if self.sasl_ssl else ()
        require_free_ports("the Kafka broker", self.port, self.controller_port, *extra_ports)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_private(self.properties_file, self.properties())
        if self.sasl_ssl is not None:
            tls = self.sasl_ssl.tls
            self._write_private(
                self.sasl_ssl_keystore,
                tls.server_key.read_text("utf-8") + tls.server_cert.read_text("utf-8"),
            )
        self.log4j_file.write_text(self._log4j2_config(), "utf-8")
        cluster_id = self._format_once()
        self._process.spawn(
            self._java_argv("kafka.Kafka", str(self.properties_file)),
        )
        try:
            self._wait_ready(cluster_id, started + self.startup_timeout_s)
        except BaseException:
            self._process.kill()  # never leave a half-started JVM behind
            raise
        self._create_offsets_topic()
        log.info(
            "Kafka broker up at %s in %.1f s (pid %s)",
            self.bootstrap_servers,
            time.monotonic() - started,
            self.pid,
        )

    def _probe_client(self) -> AdminClient:
        return AdminClient(
            {
                **self.client_config(),
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 250,
                "log_level": 0,  # "connection refused" until the JVM listens is expected
            }
        )

    def answers(self, timeout_s: float = 2.0) -> bool:
        """Whether a broker answers a metadata request on our port right now."""
        try:
            return bool(self._probe_client().list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return False

    def _wait_ready(self, cluster_id: str | None, deadline: float) -> None:
        """Poll metadata until our broker answers, the JVM dies or the deadline passes.

        The cluster id must match the one formatted into ``data_dir``: an answer from some
        other broker on the same port must not count as ours being up.
        """
        admin = self._probe_client()
        last_error = "no answer yet"
        while True:
            if not self._process.is_alive():
                raise ServerStartError(
                    f"the Kafka broker exited during startup (exit code "
                    f"{self._process.exit_code()}); {self._logs_for_error()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(
                    f"the Kafka broker at {self.bootstrap_servers} did not answer within "
                    f"{self.startup_timeout_s:.0f} s (last: {last_error}); {self._logs_for_error()}"
                )
            try:
                metadata = admin.list_topics(timeout=min(1.0, remaining))
            except KafkaException as error:
                last_error = str(error)
                continue
            if not metadata.brokers:
                last_error = "metadata without brokers"
            elif cluster_id is not None and metadata.cluster_id != cluster_id:
                raise ServerStartError(
                    f"{self.bootstrap_servers} is answered by another cluster "
                    f"({metadata.cluster_id}, expected {cluster_id})"
                )
            else:
                return
            time.sleep(0.05)

    def _create_offsets_topic(self) -> None:
        """Have the broker create ``__consumer_offsets`` now rather than at the first join.

        Created lazily, the topic is not there when the first consumer looks for its group
        coordinator, and librdkafka only asks again about 3 s later: every fresh broker's first
        consumer would stall that long. Describing any group makes the broker create it
        (~0.1 s); the answer itself does not matter.
        """
        admin = self._probe_client()  # must outlive the futures, or they never complete
        futures = admin.describe_consumer_groups(["riskstream-devenv-warm-up"], request_timeout=10)
        for future in futures.values():
            with contextlib.suppress(KafkaException, TimeoutError):
                future.result(timeout=10)

    def _logs_for_error(self) -> str:
        return (
            f"last lines of {self.server_log}:\n{tail(self.server_log)}\n"
            f"last lines of {self._process.log_file}:\n{tail(self._process.log_file, 15)}"
        )

    def stop(self) -> None:
        """SIGTERM for a controlled shutdown (bounded by ``stop_timeout_s``), then SIGKILL."""
        self._process.stop(self.stop_timeout_s)

    def kill(self) -> None:
        """SIGKILL the JVM, as a crash would; the next start recovers the logs."""
        self._process.kill()

    def pause(self) -> None:
        """SIGSTOP the JVM: clients' connections stay open but nothing answers (see
        :meth:`ManagedProcess.pause`); :meth:`resume` lets it go on."""
        self._process.pause()

    def resume(self) -> None:
        self._process.resume()

    def restart(self) -> None:
        """Stop cleanly and start again on the same ports and data."""
        self.stop()
        self.start()

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
