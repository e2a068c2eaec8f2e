"""The Kafka broker's class path, resolved from Maven Central, and the Java that runs it.

``kafka-pom.xml`` (package data beside this file) pins the Apache Kafka version and the log4j2
SLF4J binding; Maven copies them with all runtime dependencies into ``<home>/kafka/libs``,
which then matches the ``libs/`` of Kafka's binary distribution.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.resources
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream.devenv.errors import DevEnvError, JarResolveError, ToolNotFoundError
from stream.devenv.process import tail

log = logging.getLogger(__name__)

_POM_RESOURCE = "kafka-pom.xml"
_MIN_JAVA = 17  # Kafka 4 brokers refuse older runtimes


def pom_text() -> str:
    """The pom shipped as package data that pins the broker's jars."""
    return importlib.resources.files("stream.devenv").joinpath(_POM_RESOURCE).read_text("utf-8")


def kafka_version() -> str:
    """The Apache Kafka version the pom pins (e.g. ``4.4.0``)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_text())
    if match is None:
        raise DevEnvError(f"{_POM_RESOURCE} has no <kafka.version> property")
    return match.group(1)


def _require_tool(name: str, how_to_install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolNotFoundError(f"`{name}` is not on PATH; install it with: {how_to_install}")
    return path


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive lock, so two test sessions resolving at once do not interleave files."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(home: Path) -> Path:
    """Resolve the broker's jars into ``<home>/kafka/libs`` once; return that directory.

    A marker file records the SHA-256 of the pom the jars came from, so Maven runs again only
    when the pom changes (e.g. a Kafka upgrade). Maven writes into a staging directory that
    replaces ``libs`` only after it succeeded: an interrupted or failed resolve can never leave
    a half-filled class path, or jars of two Kafka versions side by side. Maven's output is
    kept in ``<home>/kafka/mvn.log`` and shown only when it fails.
    """
    kafka_home = home.resolve() / "kafka"
    libs = kafka_home / "libs"
    marker = kafka_home / "libs.sha256"
    pom = pom_text()
    digest = hashlib.sha256(pom.encode()).hexdigest()

    def cached() -> bool:
        return (
            marker.is_file()
            and marker.read_text().strip() == digest
            and any(libs.glob("kafka_2.13-*.jar"))
        )

    if cached():
        return libs
    with _locked(kafka_home / ".resolve.lock"):
        if cached():  # another process resolved while we waited for the lock
            return libs
        mvn = _require_tool("mvn", "apt-get install -y maven")
        pom_file = kafka_home / "pom.xml"
        pom_file.write_text(pom, "utf-8")
        staging = kafka_home / "libs.staging"
        shutil.rmtree(staging, ignore_errors=True)
        mvn_log = kafka_home / "mvn.log"
        argv = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom_file),
            "dependency:copy-dependencies",
            # runtime scope: kafka_2.13 itself plus everything it needs at run time, the same
            # set as the binary distribution's libs/ (test-scoped jars stay out).
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        log.info("resolving the Kafka broker's jars with Maven into %s", libs)
        started = time.monotonic()
        with mvn_log.open("wb") as out:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        if result.returncode != 0:
            raise JarResolveError(
                f"Maven failed (exit {result.returncode}) resolving the Kafka jars from "
                f"{pom_file}; the last lines of {mvn_log}:\n{tail(mvn_log)}"
            )
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise JarResolveError(f"Maven succeeded but put no kafka_2.13 jar in {staging}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(digest + "\n")
        log.info(
            "resolved %d jars in %.1f s", len(list(libs.glob("*.jar"))), time.monotonic() - started
        )
    return libs


@functools.cache
def find_java() -> str:
    """The ``java`` executable, checked to be version 17 or newer."""
    java = shutil.which("java") or "/usr/bin/java"
    if not Path(java).exists():
        raise ToolNotFoundError(
            "`java` (17 or newer) is not on PATH; install it with: "
            "apt-get install -y openjdk-17-jre-headless"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < _MIN_JAVA:
        raise ToolNotFoundError(
            f"Kafka {kafka_version()} needs Java {_MIN_JAVA}+, but {java} is: "
            f"{result.stderr.strip().splitlines()[:1]}"
        )
    return java
