"""The trainer reads labels however riskstream's producers compress them, and a fatal error
in its Kafka client ends it with the documented exit code 2.

Labels are produced exactly as `riskstream simulate --kafka` does: by that command (lz4, the
project's codec), and by the same code with the other codecs a producer may choose (zstd,
snappy, gzip). The trainer consumes all of them on the real broker. Then a trainer without
aiokafka's codec library (the module hidden from the child process, as on an installation
missing it) meets the same labels: it must stop with exit code 2 and a line naming the cause,
not report success. A trainer that cannot start (metrics port taken, Redis refusing the
credentials) exits 2 with one line, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from stream.devenv import free_ports
from stream.redis_client import connect
from stream.settings import Settings, TrainerSettings, to_env
from stream.simulate.config import build_config
from stream.simulate.engine import simulate
from stream.simulate.produce import produce
from stream.trainer.store import MAX_UNJOINED, CaseStore

from .conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIMULATION = {
    "customers": 60,
    "days": 3,
    "seed": 5,
    "start_date": "2026-02-01",
    "prevalence": 0.05,
    "warmup_days": 0,
}


def trainer_settings(test_settings: Settings) -> Settings:
    (port,) = free_ports(1)
    return test_settings.model_copy(
        update={
            "trainer": TrainerSettings(
                group_id=f"trainer-{test_settings.context.namespace}",
                min_labels_per_class=10_000,  # consume only: no fine-tune in these tests
                check_every_s=1.0,
                metrics_port=port,
            )
        }
    )


def simulate_to_kafka_by_command(settings: Settings) -> int:
    """`riskstream simulate --kafka` itself; returns how many labels it produced."""
    args = [f"--{name.replace('_', '-')}={value}" for name, value in SIMULATION.items()]
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "simulate", "--kafka", "--no-progress", *args],
        env={**os.environ, **to_env(settings)},
        capture_output=True,
        check=True,
        timeout=300,
    )
    labels: int = orjson.loads(done.stdout)["kafka"]["labels"]
    assert labels > 0
    return labels


def outcomes(settings: Settings) -> int:
    store = CaseStore(
        connect(settings.redis), settings.context.namespace, max_cases=100, ttl_s=600,
        max_unjoined=MAX_UNJOINED,
    )  # fmt: skip
    return sum(store.state().outcomes.values())


def test_the_trainer_reads_labels_in_every_codec_the_producers_use(
    test_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = trainer_settings(test_settings)
    produced = simulate_to_kafka_by_command(settings)  # lz4
    sim = simulate(build_config(**SIMULATION), progress=False)
    for codec in ("zstd", "snappy", "gzip"):
        report = produce(
            sim, settings, progress=False, config_overrides={"compression.type": codec}
        )
        produced += report.labels
    trainer = start_worker(settings, "run", "trainer")
    wait_for(lambda: outcomes(settings) >= produced, f"{produced} labels consumed", 180)
    assert outcomes(settings) == produced
    assert trainer.terminate() == 0, trainer.log()
    assert "Traceback" not in trainer.log()
    assert "CodecError" not in trainer.log()


def test_a_trainer_that_cannot_decode_labels_exits_2_with_the_reason(
    test_settings: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    settings = trainer_settings(test_settings)
    simulate_to_kafka_by_command(settings)
    hidden = tmp_path / "no-codecs"
    hidden.mkdir()
    (hidden / "cramjam.py").write_text('raise ImportError("hidden by the test")\n')
    trainer = start_worker(settings, "run", "trainer", extra_env={"PYTHONPATH": str(hidden)})
    assert trainer.process is not None
    try:
        code = trainer.process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the trainer kept running on labels it cannot read:\n{trainer.log()}")
    log = trainer.log()
    assert code == 2, log
    # faust logs the crash in its own words first; the trainer's verdict is one line of its own
    critical = [line for line in log.splitlines() if "CRITICAL stream.trainer" in line]
    assert len(critical) == 1, log
    assert "trainer cannot continue" in critical[0]
    assert "lz4" in critical[0]
    assert outcomes(settings) == 0  # nothing was taken as processed


def _port_taken(settings: Settings, tmp_path: Path) -> tuple[Settings, socket.socket]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    trainer = settings.trainer.model_copy(update={"metrics_port": port})
    return settings.model_copy(update={"trainer": trainer}), holder


def _redis_refuses(settings: Settings, tmp_path: Path) -> tuple[Settings, None]:
    redis = settings.redis.model_copy(
        update={"username": "nobody-here", "password": SecretStr("not-the-password")}
    )
    return settings.model_copy(update={"redis": redis}), None


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [(_port_taken, "metrics server on 127.0.0.1"), (_redis_refuses, "Redis refused")],
)
def test_a_trainer_that_cannot_start_exits_2_with_one_line(
    breakage: Callable[[Settings, Path], tuple[Settings, socket.socket | None]],
    expected: str,
    test_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings, holder = breakage(trainer_settings(test_settings), tmp_path)
    try:
        trainer = start_worker(settings, "run", "trainer")
        assert trainer.process is not None
        code = trainer.process.wait(timeout=120)
    finally:
        if holder is not None:
            holder.close()
    log = trainer.log()
    assert code == 2, log
    assert "Traceback" not in log
    critical = [line for line in log.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1, log
    assert "trainer cannot start" in critical[0]
    assert expected in critical[0]
    assert "not-the-password" not in log
