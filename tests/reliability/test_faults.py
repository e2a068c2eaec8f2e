"""Faults injected into a running scorer on a real broker and Redis of this module's own.

Each test streams simulated events (a backlog, so the scorer is busy batch after batch, then
live traffic at a steady rate), injects one fault mid-stream, and ends with the accounting of
``harness.account``: every input event scored or dead-lettered, every alert there, repeats only
as the delivery mode allows, and the recovery time - from the end of the fault to the scorer's
next successful commit.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from models.inference import load_model
from models.registry import Registry, check_safe_formats
from models.settings import ModelSettings
from stream.datasets import build_split
from stream.devenv import KafkaBroker, RedisServer
from stream.settings import ContextSettings, Settings, to_env
from tests.helpers import event_ids, produce_values

from .harness import (
    Accounting,
    MetricsSampler,
    PacedProducer,
    ScorerProcess,
    ScorerStarter,
    account,
    count_context_differences,
    first_commit_of,
    report,
    scorer_settings,
    wait_for_assignment,
    wait_for_ids,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKLOG = 400
LIVE = 500
RATE = 60.0  # events/s of live traffic: well under what the scorer sustains on 2 busy cores
DRAIN_TIMEOUT_S = 300
LOG_TAIL_CHARS = 6000

REPRODUCE = ".venv/bin/pytest tests/reliability/test_faults.py -k {}"


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(
    fault_broker: KafkaBroker, fault_redis: RedisServer, trained_registry: Path, tmp_path: Path
) -> MakeSettings:
    def make(partitions: int = 3, **scorer: object) -> Settings:
        return scorer_settings(
            fault_broker.kafka_settings(),
            fault_redis.redis_settings(),
            trained_registry,
            tmp_path / "home",
            partitions=partitions,
            **scorer,
        )

    return make


class Stream:
    """A backlog produced up front, then live traffic from a thread."""

    def __init__(self, settings: Settings, values: list[bytes]) -> None:
        self.settings = settings
        self.backlog, self.live = values[:BACKLOG], values[BACKLOG : BACKLOG + LIVE]
        produce_values(settings.kafka, settings.topics.transactions, self.backlog)
        self.feed = PacedProducer(settings.kafka, settings.topics.transactions, self.live, RATE)

    def go_live(self) -> None:
        self.feed.start()

    def finish(self, scorer: ScorerProcess) -> list[str]:
        """All input ids once the live traffic is in, after every one was accounted for. On
        a timeout the failure carries the end of ``scorer``'s log: a drain that stalls after
        a fault is otherwise undiagnosable from a CI log."""
        ids = event_ids(self.backlog) + self.feed.join()
        try:
            wait_for_ids(self.settings.kafka, self.settings, set(ids), DRAIN_TIMEOUT_S)
        except AssertionError as exc:
            tail = scorer.log()[-LOG_TAIL_CHARS:]
            raise AssertionError(f"{exc}\n--- the scorer's log, last part ---\n{tail}") from exc
        return ids


def scored_so_far(scorer: ScorerProcess) -> tuple[float, float]:
    """(events consumed, events scored) according to the scorer's metrics."""
    metrics = scorer.metrics()
    scored = sum(v for k, v in metrics.items() if k.startswith("riskstream_events_scored_total"))
    return metrics.get("riskstream_events_in_total", 0.0), scored


def wait_mid_batch(scorer: ScorerProcess, at_least_scored: int, timeout_s: float = 240) -> int:
    """Wait until the scorer has scored ``at_least_scored`` events and holds a consumed batch
    it has not finished; returns how many events are in flight."""
    in_flight = 0

    def ready() -> bool:
        nonlocal in_flight
        assert scorer.alive(), scorer.log()
        consumed, scored = scored_so_far(scorer)
        in_flight = int(consumed - scored)
        return scored >= at_least_scored and in_flight > 0

    wait_until(ready, timeout_s, f"{at_least_scored} events scored and a batch in flight", 0.02)
    return in_flight


def assert_nothing_lost(accounting: Accounting) -> None:
    assert accounting.lost == 0, f"lost events, e.g. {accounting.lost_ids}"
    assert accounting.accounted == accounting.events_in
    assert accounting.alerts_missing == 0, "an event scored as alerted has no alert"
    assert accounting.alerts > 0, "the test model alerts on a few percent of events"


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_kill_9_of_the_scorer_mid_batch_then_restart_loses_nothing(
    make_settings: MakeSettings,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    delivery: str,
) -> None:
    settings = make_settings(delivery=delivery)
    stream = Stream(settings, stream_values)
    scorer = start_scorer(settings, name="killed")
    wait_for_assignment(scorer)
    stream.go_live()
    in_flight = wait_mid_batch(scorer, at_least_scored=150)
    scorer.kill()

    restarted = start_scorer(settings, name="restarted")
    recovery_s = first_commit_of(restarted)
    ids = stream.finish(restarted)
    assert restarted.terminate() == 0, restarted.log()
    accounting = account(settings, ids)
    report(
        f"kill_9_{delivery}",
        fault=f"kill -9 of the scorer with a batch of {in_flight} in flight, restarted at once",
        mode=delivery,
        accounting=accounting,
        recovery_s=recovery_s,
        inputs=f"{len(ids)} simulated events: {BACKLOG} backlog + {LIVE} live at {RATE:.0f}/s",
        command=REPRODUCE.format(f"'kill_9 and {delivery}'"),
        notes="recovery: restart to first commit (process start, model load, group join)",
    )
    assert_nothing_lost(accounting)
    if delivery == "exactly_once":
        # A read_committed reader sees each output once: the killed scorer's open transaction
        # was aborted, its input offsets were not committed, the restart redid it.
        assert accounting.duplicate_scores == 0
        assert accounting.duplicate_alerts == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_restart_mid_stream_the_scorer_recovers_on_its_own(
    make_settings: MakeSettings,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    fault_broker: KafkaBroker,
    how: str,
) -> None:
    settings = make_settings()
    stream = Stream(settings, stream_values)
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    stream.go_live()
    with MetricsSampler(scorer) as sampler:
        wait_mid_batch(scorer, at_least_scored=150)
        fault_started = time.monotonic()
        if how == "stop":
            fault_broker.stop()  # controlled shutdown
        else:
            fault_broker.kill()  # SIGKILL: a crash; the next start recovers its logs
        fault_broker.start()  # same ports, same data
        fault_ended = time.monotonic()
        ids = stream.finish(scorer)
        recovery_s = sampler.first_commit_after(fault_ended)
    assert scorer.alive(), "the scorer must ride out a broker restart without help"
    assert scorer.terminate() == 0, scorer.log()
    accounting = account(settings, ids)
    what = "stopped (SIGTERM)" if how == "stop" else "killed (SIGKILL)"
    report(
        f"broker_{how}",
        fault=f"Kafka broker {what} and started again mid-stream "
        f"({fault_ended - fault_started:.0f} s down)",
        mode="at_least_once",
        accounting=accounting,
        recovery_s=recovery_s,
        inputs=f"{len(ids)} simulated events: {BACKLOG} backlog + {LIVE} live at {RATE:.0f}/s",
        command=REPRODUCE.format(f"'broker_restart and {how}'"),
        notes="recovery: broker answering again to the scorer's next commit",
    )
    assert_nothing_lost(accounting)
    assert recovery_s is not None


def test_redis_stopped_10s_mid_stream_pauses_resumes_and_counts_nothing_twice(
    make_settings: MakeSettings,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    fault_redis: RedisServer,
) -> None:
    # One partition: the scorer then reads events in production order, and a reference
    # context computed in that order must equal what the scorer computed across the outage.
    # The stream is sparse (~16 events per hour of event time): a batch of 256 spans ~16 h,
    # more than the dedupe memory's 6 h, which is how this test found that events of one
    # retried batch could push each other out of it (docs/context.md, Idempotency).
    settings = make_settings(partitions=1)
    stream = Stream(settings, stream_values)
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    stream.go_live()
    with MetricsSampler(scorer) as sampler:
        wait_mid_batch(scorer, at_least_scored=150)
        fault_redis.stop()
        time.sleep(10)
        fault_redis.start()
        fault_ended = time.monotonic()
        ids = stream.finish(scorer)
        recovery_s = sampler.first_commit_after(fault_ended)
    retries = {k: v for k, v in scorer.metrics().items() if "batch_retries" in k}
    assert scorer.alive(), scorer.log()
    assert scorer.terminate() == 0, scorer.log()
    accounting = account(settings, ids)
    double_counted = count_context_differences(settings, stream.backlog + stream.live, ids)
    report(
        "redis_stop_10s",
        fault="redis-server (AOF on) stopped for 10 s mid-stream, then started",
        mode="at_least_once",
        accounting=accounting,
        recovery_s=recovery_s,
        inputs=f"{len(ids)} simulated events: {BACKLOG} backlog + {LIVE} live at {RATE:.0f}/s",
        command=REPRODUCE.format("redis_stopped"),
        notes=f"context features equal to a fault-free reference for all but "
        f"{double_counted} events; retries: {sum(retries.values()):.0f}",
    )
    assert_nothing_lost(accounting)
    assert sum(retries.values()) > 0, "the scorer should have paused and retried"
    assert recovery_s is not None
    assert double_counted == 0, "context after the outage differs from a fault-free run"


def test_redis_emptied_mid_stream_stops_the_scorer_and_a_restart_accepting_the_loss_resumes(
    make_settings: MakeSettings,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    fault_redis: RedisServer,
) -> None:
    # Redis back without its data (no persistence, FLUSHALL, eviction): the context store sees
    # its namespace marker gone and the scorer stops rather than score from nothing.
    settings = make_settings()
    stream = Stream(settings, stream_values)
    scorer = start_scorer(settings, name="stopped")
    wait_for_assignment(scorer)
    stream.go_live()
    wait_mid_batch(scorer, at_least_scored=150)
    with fault_redis.client() as client:
        client.flushall()
    assert scorer.process is not None
    assert scorer.process.wait(timeout=120) == 2, scorer.log()
    assert "lost its marker key" in scorer.log()
    # Nothing of a batch reaches the emptied Redis: no context, no claim, no marker. Only the
    # scored records of the batch whose context was applied just before the flush may land
    # (docs/scorer.md, "Redis loss").
    with fault_redis.client() as client:
        written = list(client.scan_iter(match=f"{settings.context.namespace}:*"))
    assert all(key.endswith(b":scored") for key in written), written[:5]
    assert len(written) <= settings.scorer.batch_max_size

    # A plain restart must not mark the namespace in use again and carry on from nothing: the
    # group has committed offsets, so the missing marker means lost context.
    plain = start_scorer(settings, name="plain-restart")
    assert plain.process is not None
    assert plain.process.wait(timeout=120) == 2, plain.log()
    assert "--accept-context-loss" in plain.log()
    assert "Traceback" not in plain.log()
    with fault_redis.client() as client:
        after = list(client.scan_iter(match=f"{settings.context.namespace}:*"))
    assert sorted(after) == sorted(written), "the refused restart wrote to Redis"

    restarted = start_scorer(settings, "--accept-context-loss", name="accepting")
    recovery_s = first_commit_of(restarted)
    ids = stream.finish(restarted)
    assert restarted.terminate() == 0, restarted.log()
    accounting = account(settings, ids)
    report(
        "redis_emptied",
        fault="Redis emptied mid-stream (FLUSHALL): scorer stops with ContextStateLost (exit 2), "
        "nothing of the batch written; a plain restart refuses too (exit 2); restarted with "
        "--accept-context-loss",
        mode="at_least_once",
        accounting=accounting,
        recovery_s=recovery_s,
        inputs=f"{len(ids)} simulated events: {BACKLOG} backlog + {LIVE} live at {RATE:.0f}/s",
        command=REPRODUCE.format("redis_emptied"),
        notes="recovery: operator restart to first commit; context restarts empty, by decision",
    )
    assert_nothing_lost(accounting)


def test_full_producer_queue_is_backpressure_and_drops_nothing(
    make_settings: MakeSettings,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    fault_broker: KafkaBroker,
) -> None:
    # Four messages of room for a batch of 64 events, each with a score and maybe an alert:
    # every batch fills the queue; with the broker frozen it stays full for seconds.
    settings = make_settings(producer_queue_max_messages=4)
    stream = Stream(settings, stream_values)
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    stream.go_live()
    with MetricsSampler(scorer) as sampler:
        wait_mid_batch(scorer, at_least_scored=150)
        fault_broker.pause()  # SIGSTOP: connections hang, nothing is acknowledged
        try:
            time.sleep(6)
        finally:
            fault_broker.resume()
        fault_ended = time.monotonic()
        ids = stream.finish(scorer)
        recovery_s = sampler.first_commit_after(fault_ended)
    queue_full = scorer.metrics().get("riskstream_producer_queue_full_total", 0.0)
    assert scorer.terminate() == 0, scorer.log()
    accounting = account(settings, ids)
    report(
        "producer_queue_full",
        fault="producer queue of 4 messages; broker frozen (SIGSTOP) for 6 s mid-stream",
        mode="at_least_once",
        accounting=accounting,
        recovery_s=recovery_s,
        inputs=f"{len(ids)} simulated events: {BACKLOG} backlog + {LIVE} live at {RATE:.0f}/s",
        command=REPRODUCE.format("producer_queue"),
        notes=f"{queue_full:.0f} waits for queue room (BufferError served as backpressure)",
    )
    assert_nothing_lost(accounting)
    assert queue_full > 0, "the tiny queue should have filled"
    assert recovery_s is not None


# -- the trainer's side: a model written while being killed -------------------------------------

WRITER = Path(__file__).with_name("registry_writer.py")


def check_registry(registry: Registry, checked: set[str]) -> None:
    """Every visible version is complete; the champion is one of them and loads; what is left
    of an interrupted write is hidden (a ``.tmp-*`` staging directory, never listed or served)."""
    versions = registry.versions()
    champion = registry.champion()
    assert champion in versions
    for version in versions:
        if version not in checked:
            # What Registry.load checks before reading a byte of weights: formats, then every
            # file against the manifest's digests (a cut-off file fails here).
            check_safe_formats(registry.path(version))
            registry._verify_manifest(registry.path(version))
            checked.add(version)
    registry.load(champion)
    hidden = [p.name for p in registry.root.iterdir() if p.name.startswith(".")]
    assert all(name.startswith((".tmp-", ".CHAMPION.")) for name in hidden), hidden


def test_kill_9_while_a_new_version_is_written_leaves_no_partial_model_for_the_scorer(
    make_settings: MakeSettings,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    trained_registry: Path,
    tmp_path: Path,
) -> None:
    registry_dir = tmp_path / "registry"
    shutil.copytree(trained_registry, registry_dir)
    registry = Registry(registry_dir)
    settings = make_settings().model_copy(
        update={"model": ModelSettings(registry_dir=registry_dir)}
    )
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    feed = PacedProducer(settings.kafka, settings.topics.transactions, stream_values[:600], 30)
    feed.start()

    rng = random.Random(7)
    checked: set[str] = set()
    interrupted = 0
    for kill in range(3):
        before = {p.name for p in registry_dir.iterdir() if p.name.startswith(".tmp-")}
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(registry_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n", f"writer {kill} did not start"
        time.sleep(rng.uniform(0.3, 1.5))
        writer.kill()
        writer.wait(30)
        writer.stdout.close()
        left = {p.name for p in registry_dir.iterdir() if p.name.startswith(".tmp-")} - before
        interrupted += len(left)
        check_registry(registry, checked)

    ids = feed.join()
    wait_for_ids(settings.kafka, settings, set(ids), DRAIN_TIMEOUT_S)
    log = scorer.log()
    assert scorer.terminate() == 0, log
    accounting = account(settings, ids)
    swaps = log.count("now scoring with model")
    shutil.rmtree(registry_dir)  # dozens of 8 MB versions: do not keep them in tmp
    report(
        "kill_9_registry_write",
        fault="kill -9 of a process publishing model versions (save + promote, as a fine-tune "
        "ends), 3 times at seeded random moments, under a running scorer",
        mode="at_least_once",
        accounting=accounting,
        inputs=f"{len(ids)} events at 30/s while versions were written",
        command=REPRODUCE.format("new_version_is_written"),
        notes=f"{interrupted} writes cut mid-version (hidden staging dirs left, never listed); "
        f"{len(checked)} visible versions all load; the scorer swapped {swaps} times, "
        "never to a partial version",
    )
    assert interrupted > 0, "no kill landed mid-write: the test proved nothing"
    assert "failed to load" not in log
    assert swaps > 0
    assert_nothing_lost(accounting)


def test_kill_9_of_model_training_mid_run_leaves_the_registry_as_it_was(
    fault_redis: RedisServer, stream_sim: Path, trained_registry: Path, tmp_path: Path
) -> None:
    # `riskstream model train` stands in for the trainer's fine-tune job (see RELIABILITY.md):
    # both train off the scoring path, then write through Registry.save.
    registry_dir = tmp_path / "registry"
    shutil.copytree(trained_registry, registry_dir)
    registry = Registry(registry_dir)
    champion, versions = registry.champion(), registry.versions()
    settings = Settings(
        home=tmp_path / "home",
        redis=fault_redis.redis_settings(),
        context=ContextSettings(namespace=f"train-{os.getpid()}-{time.monotonic_ns()}"),
        model=ModelSettings(registry_dir=registry_dir),
    )
    build_split(stream_sim, settings, progress=False, cache_dir=tmp_path / "split")
    log_path = tmp_path / "train.log"
    command = ["model", "train", "--data", str(tmp_path / "split"), "--preset", "tiny"]
    with log_path.open("wb") as log:
        training = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", *command, "--max-steps", "400", "--promote"],
            env={**os.environ, **to_env(settings), "HF_HUB_OFFLINE": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def steps_done() -> int:
        # tqdm redraws at most every 0.1 s, so on a fast machine it can skip any one step
        # number ("| 20/400" was never printed once: 18, then 21): read the newest count.
        counts = re.findall(rb"\| *(\d+)/400", log_path.read_bytes())
        return int(counts[-1]) if counts else 0

    try:
        wait_until(
            lambda: steps_done() >= 20 or training.poll() is not None,
            300,
            "20 training steps",
            poll_s=0.2,
        )
        assert training.poll() is None, log_path.read_text(errors="replace")
        training.kill()
        training.wait(30)
    finally:
        if training.poll() is None:
            training.kill()
            training.wait(30)

    assert registry.champion() == champion
    assert registry.versions() == versions
    assert not [p for p in registry_dir.iterdir() if p.name.startswith(".tmp-")]
    model = load_model(settings.model)  # the champion still loads, as a scorer would load it
    assert model.version == champion
    report(
        "kill_9_training",
        fault="kill -9 of `riskstream model train --promote` 20 steps into training",
        mode="-",
        inputs="a 6-day simulated dataset (1,466 training events)",
        command=REPRODUCE.format("model_training"),
        notes="champion unchanged and loadable, no version or staging directory added",
    )
