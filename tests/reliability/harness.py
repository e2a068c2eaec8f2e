"""What the reliability tests share: scorer processes, paced input, reading outputs, the
accounting every fault test ends with, and the figures it reports to RELIABILITY.md.

Accounting (docs/scorer.md: with ``scorer.emit_scores`` every scored event is on the scores
topic): every input event id must be on the scores topic or the dead-letter topic; an event
whose score says ``alerted`` must have its alert; repeats are counted, and every alert must
carry the deterministic id ``uuid5(event_id, model_version)``, so a repeat is recognisable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from models.settings import ModelSettings
from schemas import Alert, TransactionEvent, alert_id_for, decode
from stream.context.store import ContextStore
from stream.devenv import free_ports
from stream.kafka.topics import ensure_topics
from stream.pipeline.records import ScoredRecordStore
from stream.redis_client import connect
from stream.settings import (
    ContextSettings,
    KafkaSettings,
    RedisSettings,
    ScorerSettings,
    Settings,
    TopicSettings,
    to_env,
)
from tests.helpers import message_key

REPO_ROOT = Path(__file__).resolve().parents[2]
# When set, each fault / hostile-input test appends one JSON line with its figures here;
# bench/reliability_report.py sets it and renders RELIABILITY.md's table from the lines.
REPORT_ENV = "RISKSTREAM_RELIABILITY_REPORT"


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(5).hex()}"


# -- settings ----------------------------------------------------------------------------


def scorer_settings(
    kafka: KafkaSettings,
    redis: RedisSettings,
    registry: Path,
    home: Path,
    *,
    partitions: int = 3,
    transactions_config: dict[str, str] | None = None,
    **scorer: object,
) -> Settings:
    """Settings for a scorer on ``kafka``/``redis`` with topics and a namespace of its own,
    every score emitted (the accounting reads them), small batches."""
    prefix = unique("rel")
    topics = TopicSettings(
        transactions=f"{prefix}-tx",
        dlq=f"{prefix}-dlq",
        alerts=f"{prefix}-alerts",
        alerts_shadow=f"{prefix}-alerts-shadow",
        scores=f"{prefix}-scores",
        labels=f"{prefix}-labels",
        models=f"{prefix}-models",
    )
    counts = {name: 1 for name in topics.model_dump().values()}
    counts[topics.transactions] = partitions
    counts[topics.alerts] = partitions
    ensure_topics(kafka, counts, configs={topics.transactions: transactions_config or {}})
    options: dict[str, object] = {
        "group_id": f"{prefix}-scorer",
        "batch_max_size": 64,
        "batch_max_wait_ms": 20,
        "emit_scores": True,
        "shutdown_timeout_s": 30,
        **scorer,
    }
    return Settings(
        home=home,
        kafka=kafka,
        redis=redis,
        topics=topics,
        context=ContextSettings(namespace=prefix),
        model=ModelSettings(registry_dir=registry),
        scorer=ScorerSettings.model_validate(options),
    )


# -- scorer processes ----------------------------------------------------------------------


@dataclass
class ScorerProcess:
    """`riskstream run scorer` as a child process, its output (stdout and stderr) in a file."""

    settings: Settings
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> ScorerProcess:
        env = {**os.environ, **to_env(self.settings), "HF_HUB_OFFLINE": "1", **self.extra_env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "scorer", *self.extra_args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 90) -> int:
        """SIGTERM (finish the batch, commit, leave), then wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop_quietly(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=30)

    def metrics(self, timeout_s: float = 2.0) -> dict[str, float]:
        """The scorer's /metrics as {sample name (+labels): value}; {} if not serving yet."""
        url = f"http://127.0.0.1:{self.settings.scorer.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                text = response.read().decode()
        except OSError:
            return {}
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return values

    def rss_kib(self) -> int:
        """Resident memory of the process now, from /proc/<pid>/status (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")


class ScorerStarter:
    """Starts scorer processes (each on a free metrics port) and kills leftovers at the end."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[ScorerProcess] = []

    def __call__(
        self,
        settings: Settings,
        *args: str,
        name: str = "scorer",
        env: dict[str, str] | None = None,
    ) -> ScorerProcess:
        (port,) = free_ports(1)
        own = settings.model_copy(
            update={"scorer": settings.scorer.model_copy(update={"metrics_port": port})}
        )
        log_path = self._log_dir / f"{name}-{len(self.started)}.log"
        process = ScorerProcess(own, log_path, list(args), dict(env or {}))
        self.started.append(process.start())
        return process

    def close(self) -> None:
        for process in self.started:
            process.stop_quietly()


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1
) -> float:
    """Poll until ``condition()`` holds; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def wait_for_log(scorer: ScorerProcess, text: str, timeout_s: float = 120) -> None:
    def logged() -> bool:
        assert scorer.alive(), scorer.log()
        return text in scorer.log()

    wait_until(logged, timeout_s, f"{text!r} in the scorer's log", poll_s=0.2)


def wait_for_assignment(scorer: ScorerProcess, timeout_s: float = 180) -> None:
    def assigned() -> bool:
        assert scorer.alive(), scorer.log()
        return "assigned [" in scorer.log() and ", now reading []" not in scorer.log()

    wait_until(assigned, timeout_s, "the scorer to be assigned partitions", poll_s=0.2)


class MetricsSampler:
    """Samples a scorer's commit counter every ``interval_s`` in a thread, so the time of the
    first commit after a fault can be read off afterwards (the recovery time)."""

    def __init__(self, scorer: ScorerProcess, interval_s: float = 0.1) -> None:
        self.scorer = scorer
        self.samples: list[tuple[float, float]] = []  # (monotonic time, commits so far)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MetricsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            commits = self.scorer.metrics(timeout_s=1.0).get("riskstream_commits_total")
            if commits is not None:
                self.samples.append((time.monotonic(), commits))
            self._stop.wait(self._interval_s)

    def first_commit_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first sample whose commit count grew past the count
        at ``moment`` (None if no commit followed)."""
        before = [c for t, c in self.samples if t <= moment]
        baseline = before[-1] if before else 0.0
        for t, commits in self.samples:
            if t > moment and commits > baseline:
                return t - moment
        return None


def first_commit_of(scorer: ScorerProcess, timeout_s: float = 240) -> float:
    """Seconds from the process start to its first successful commit."""
    done = wait_until(
        lambda: scorer.metrics().get("riskstream_commits_total", 0.0) >= 1,
        timeout_s,
        "the restarted scorer's first commit",
        poll_s=0.1,
    )
    return done - scorer.started_at


# -- input ---------------------------------------------------------------------------------


class PacedProducer:
    """Produces ``values`` at ``rate`` per second from a thread, as live traffic would arrive,
    and records which of them the broker acknowledged (the events that went in)."""

    def __init__(self, kafka: KafkaSettings, topic: str, values: Sequence[bytes], rate: float):
        self._producer = Producer(
            {
                **kafka.client_config(),
                "enable.idempotence": True,
                "linger.ms": 5,
                # Outlives a broker restart: the input must go in, however long the fault.
                "delivery.timeout.ms": 600_000,
            }
        )
        self._topic = topic
        self._values = list(values)
        self._interval_s = 1.0 / rate
        self.acknowledged: list[str] = []
        self.failed: list[str] = []
        self.produced = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def _report(self, error: KafkaError | None, message: Message) -> None:
        event_id = orjson.loads(message.value() or b"{}")["event_id"]
        (self.failed if error is not None else self.acknowledged).append(event_id)

    def _run(self) -> None:
        started = time.monotonic()
        for index, value in enumerate(self._values):
            delay = started + index * self._interval_s - time.monotonic()
            if delay > 0:
                self._producer.poll(delay)
            while True:
                try:
                    self._producer.produce(
                        self._topic, value=value, key=message_key(value), on_delivery=self._report
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
            self.produced = index + 1
            self._producer.poll(0)
        self._producer.flush(600)

    def join(self, timeout_s: float = 900) -> list[str]:
        """Wait until every value was produced and acknowledged; returns the acknowledged ids."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "input producer did not finish"
        assert not self.failed, f"{len(self.failed)} input messages were not acknowledged"
        return self.acknowledged


# -- output --------------------------------------------------------------------------------


def _reader(kafka: KafkaSettings, **overrides: object) -> Consumer:
    return Consumer(
        {
            **kafka.client_config(),
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **overrides,
        }
    )


def read_all(kafka: KafkaSettings, topics: Sequence[str], timeout_s: float = 120) -> list[Message]:
    """Every committed message of ``topics``, read from the start to the end as it is now
    (with read_committed the end is the last stable offset: open transactions wait)."""
    consumer = _reader(kafka, **{"enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(timeout=30)
        partitions = [
            TopicPartition(topic, p, 0)
            for topic in topics
            for p in metadata.topics[topic].partitions
        ]
        consumer.assign(partitions)
        pending = {(tp.topic, tp.partition) for tp in partitions}
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"read_all: {sorted(pending)} not at the end"
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic(), message.partition()))
                else:
                    raise AssertionError(f"reading {message.topic()}: {error.str()}")
        return messages
    finally:
        consumer.close()


def wait_for_ids(
    kafka: KafkaSettings, settings: Settings, expected: set[str], timeout_s: float
) -> None:
    """Wait until every expected event id is on the scores or the dead-letter topic."""
    consumer = _reader(kafka)
    consumer.subscribe([settings.topics.scores, settings.topics.dlq])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not expected <= seen:
            if time.monotonic() > deadline:
                missing = sorted(expected - seen)
                raise AssertionError(f"{len(missing)} events not accounted for, e.g. {missing[:5]}")
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    seen.update(_output_ids(message))
    finally:
        consumer.close()


def _output_ids(message: Message) -> list[str]:
    """The event id a score or dead letter is about (none for a dead letter without one)."""
    try:
        data = orjson.loads(message.value() or b"")
    except orjson.JSONDecodeError:
        return []
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return [event_id] if isinstance(event_id, str) else []


# -- accounting -------------------------------------------------------------------------------


@dataclass
class Accounting:
    """The figures of one test, as they go into RELIABILITY.md."""

    events_in: int
    scored: int
    dead_lettered: int
    accounted: int
    lost: int
    duplicate_scores: int
    alerts: int
    alerts_missing: int
    duplicate_alerts: int
    lost_ids: list[str] = field(default_factory=list)


def account(settings: Settings, input_ids: Sequence[str]) -> Accounting:
    """Read the scores, dead letters and alerts as they are now and account for the input.

    Call after the scorers stopped. Asserts the invariants that hold in every delivery mode
    (every alert carries its deterministic id; an event never has two alert ids for one model
    version); what is left to the caller is how many repeats the mode allows."""
    messages = read_all(
        settings.kafka, [settings.topics.scores, settings.topics.dlq, settings.topics.alerts]
    )
    scores = [m for m in messages if m.topic() == settings.topics.scores]
    dead = [m for m in messages if m.topic() == settings.topics.dlq]
    alert_messages = [m for m in messages if m.topic() == settings.topics.alerts]
    score_ids = Counter(orjson.loads(m.value())["event_id"] for m in scores)
    dead_ids = {i for m in dead for i in _output_ids(m)}
    alerted = {
        s["event_id"] for s in (orjson.loads(m.value()) for m in scores) if s["alerted"] is True
    }
    alerts = [decode(Alert, m.value()) for m in alert_messages]
    ids_per_event: dict[tuple[str, str], set[str]] = {}
    for alert in alerts:
        assert alert.alert_id == alert_id_for(alert.event.event_id, alert.model_version)
        ids_per_event.setdefault((alert.event.event_id, alert.model_version), set()).add(
            alert.alert_id
        )
    assert all(len(ids) == 1 for ids in ids_per_event.values())
    alert_counts = Counter(a.alert_id for a in alerts)
    inputs = set(input_ids)
    accounted = inputs & (set(score_ids) | dead_ids)
    lost = sorted(inputs - accounted)
    return Accounting(
        events_in=len(inputs),
        scored=len(inputs & set(score_ids)),
        dead_lettered=len(inputs & dead_ids),
        accounted=len(accounted),
        lost=len(lost),
        duplicate_scores=sum(n - 1 for n in score_ids.values()),
        alerts=len(alert_counts),
        alerts_missing=len(alerted - {a.event.event_id for a in alerts}),
        duplicate_alerts=sum(n - 1 for n in alert_counts.values()),
        lost_ids=lost[:10],
    )


def report(
    test: str,
    *,
    fault: str,
    mode: str,
    accounting: Accounting | None = None,
    recovery_s: float | None = None,
    inputs: str = "",
    notes: str = "",
    **extra: object,
) -> None:
    """Append this test's figures to $RISKSTREAM_RELIABILITY_REPORT (one JSON line)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    row = {
        "test": test,
        "fault": fault,
        "mode": mode,
        "inputs": inputs,
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "notes": notes,
        **(asdict(accounting) if accounting else {}),
        **extra,
    }
    row.pop("lost_ids", None)
    with open(path, "ab") as file:
        file.write(orjson.dumps(row) + b"\n")


# -- context ----------------------------------------------------------------------------------


def count_context_differences(settings: Settings, values: list[bytes], ids: list[str]) -> int:
    """How many events' context features (as the scorer stored them with the score) differ
    from a reference computed in one pass, in the same order, with no fault: a double-counted
    retry would inflate counts and sums of every later event of that customer."""
    events = [decode(TransactionEvent, v) for v in values]
    assert [e.event_id for e in events] == ids
    client = connect(settings.redis)
    try:
        records = ScoredRecordStore(client, settings.context.namespace, 3600).get_batch(ids)
        reference_ns = f"{settings.context.namespace}-ref"
        store = ContextStore(client, ContextSettings(namespace=reference_ns), create_namespace=True)
        reference = store.update_batch(events)
        store.drop_namespace()
    finally:
        client.close()
    differing = 0
    for record, ref in zip(records, reference, strict=True):
        assert record is not None
        if record.features != pytest.approx(tuple(ref.features), rel=1e-9, abs=1e-9):
            differing += 1
    return differing
