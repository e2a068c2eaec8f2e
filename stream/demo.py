"""`riskstream demo`: the whole system on one machine, learning while you watch.

1. a real Kafka broker and redis-server on 127.0.0.1 (`riskstream dev up`, on the ports the
   settings name), unless running;
2. a first model: if the registry has no champion, simulate a bank *without card testing*,
   train the small `tiny` preset on it (progress shown) and promote it;
3. the workers, each a child process with its log under ``<home>/demo/``: the scorer
   (`run scorer`, every score emitted), the trainer (`run trainer`, sized for a demo by
   :data:`DEMO_TRAINER`), the simulated analyst desk (`run analyst`), the analysts' case desk
   (`run desk`: its URL and a demo login are printed), and the simulator
   streaming another bank's traffic - where card testing appears - into `transactions`, with
   its chargebacks and confirmed cases into `risk.labels` (`simulate --out --kafka`);
4. this terminal: a sample of the alerts, every fine-tune cycle and its decision, and the
   precision and recall of the live alerts per model version, measured on the simulator's
   truth, so a promotion shows as a better row.

Ctrl-C (or the traffic ending, then a quiet spell) stops the workers - the simulator first,
the scorer last - and the broker and Redis if the demo started them. Adding a worker is one
entry in :func:`workers`. Sizing (what makes a promotion land within minutes on 2 cores) is
explained in docs/feedback-loop.md ("The demo").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from stream.settings import Settings, load_settings

DEMO_TRAIN_START = "2026-01-01"
DEMO_STREAM_START = "2026-03-01"
NEW_TYPOLOGY = "card_testing"
"""Absent from the first model's training bank, present in the streamed traffic: what the
loop has to learn from labels."""

DEMO_TRAINER: dict[str, str] = {
    # A fine-tune as soon as both classes have labels, then every 150 new cases or 3 minutes.
    "RISKSTREAM_TRAINER__MIN_LABELS_PER_CLASS": "20",
    "RISKSTREAM_TRAINER__FINETUNE_EVERY_LABELS": "150",
    "RISKSTREAM_TRAINER__FINETUNE_EVERY_MINUTES": "3",
    # Labels come within two simulated days (see the simulator's options below), so events
    # two days old are completely labelled; the holdout may be small.
    "RISKSTREAM_TRAINER__NEGATIVE_MATURITY_DAYS": "2",
    "RISKSTREAM_TRAINER__MIN_HOLDOUT_PER_CLASS": "5",
    "RISKSTREAM_TRAINER__MAX_PRESUMED_NEGATIVES": "2000",
    "RISKSTREAM_TRAINER__FINETUNE_STEPS": "150",
    "RISKSTREAM_TRAINER__CHECK_EVERY_S": "5",
}


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@dataclass(frozen=True)
class Worker:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _riskstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def _start(worker: Worker, log: Path) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            _riskstream(*worker.args),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **worker.env},
        )
    return Child(worker.name, process, log)


def ensure_model(settings: Settings, demo_dir: Path, customers: int, days: int) -> str:
    """The registry's champion, training the demo model first when there is none."""
    from models.registry import Registry

    registry = Registry(settings.model.registry_dir)
    champion = registry.champion()
    if champion is not None:
        typer.echo(f"model: champion {champion} from {settings.model.registry_dir}")
        return champion
    sim_dir = demo_dir / "training-data"
    if not (sim_dir / "manifest.json").is_file():
        typer.echo(
            f"model: none yet - simulating {customers} customers x {days} days without "
            f"{NEW_TYPOLOGY} to train the first model on"
        )
        subprocess.run(
            _riskstream(
                "simulate", "--out", str(sim_dir), "--customers", str(customers), "--days",
                str(days), "--start-date", DEMO_TRAIN_START, "--seed", "7", "--prevalence",
                "0.02", "--exclude", NEW_TYPOLOGY, "--overwrite",
            ),
            check=True,
        )  # fmt: skip
    typer.echo("model: training the first model, a tiny student (progress below)")
    # A 2 % alert budget: enough false positives for the analysts' legitimate labels.
    train = [
        "model", "train", "--data", str(sim_dir), "--preset", "tiny", "--alert-rate", "0.02",
        "--promote",
    ]  # fmt: skip
    subprocess.run(_riskstream(*train), check=True)
    champion = registry.champion()
    if champion is None:
        raise typer.Exit(1)
    return champion


def workers(traffic_dir: Path, customers: int, days: int, rate: float) -> list[Worker]:
    """The loop's processes, in start order (stopped in reverse: traffic first)."""
    analyst = [
        "run", "analyst", "--truth", str(traffic_dir / "truth.jsonl"), "--delay", "4h",
        "--flush-after-s", "20",
    ]  # fmt: skip
    traffic = [
        "simulate", "--out", str(traffic_dir), "--kafka", "--overwrite",
        "--customers", str(customers), "--days", str(days),
        "--start-date", DEMO_STREAM_START, "--seed", str(int(time.time()) % 10_000),
        "--prevalence", "0.02", "--mix", f"{NEW_TYPOLOGY}=3", "--warmup-days", "1",
        # labels within two simulated days, so the trainer's cases mature quickly
        "--chargeback-delay-days", "0.5-2", "--case-delay-days", "1-2",
        "--rate", str(rate), "--no-progress",
    ]  # fmt: skip
    return [
        Worker("scorer", ["run", "scorer"], {"RISKSTREAM_SCORER__EMIT_SCORES": "true"}),
        Worker("trainer", ["run", "trainer"], DEMO_TRAINER),
        Worker("analyst", analyst),
        Worker("desk", ["run", "desk"]),
        Worker("simulator", traffic),
    ]


def _ports(settings: Settings) -> tuple[int, int]:
    """The broker's and Redis's ports as the settings name them (the demo starts them there)."""
    first = settings.kafka.bootstrap_servers.split(",")[0].strip()
    kafka_port = int(first.rsplit(":", 1)[1])
    redis_port = urlsplit(settings.redis.url).port or 6379
    return kafka_port, redis_port


def demo(
    customers: Annotated[int, typer.Option(help="Customers in the streamed traffic.")] = 1500,
    days: Annotated[int, typer.Option(help="Days of traffic to stream.")] = 14,
    rate: Annotated[float, typer.Option(help="Events per second streamed in.")] = 200.0,
    train_customers: Annotated[
        int, typer.Option(help="Customers in the first model's training data.")
    ] = 600,
    train_days: Annotated[int, typer.Option(help="Days of training data.")] = 30,
    alerts_per_minute: Annotated[
        int, typer.Option(min=0, help="Alerts shown per minute, at most (all are scored).")
    ] = 4,
    report_every_s: Annotated[
        float, typer.Option(min=5, help="Seconds between two quality tables.")
    ] = 60.0,
    keep_servers: Annotated[
        bool, typer.Option(help="Leave the broker and Redis running afterwards.")
    ] = False,
) -> None:
    """Run the whole loop on the embedded default: local Kafka and Redis, a first model,
    synthetic traffic streaming in, analysts' dispositions, fine-tunes and promotions - and
    the live alerts' precision and recall per model version."""
    from stream.demo_watch import LoopWatch
    from stream.devenv import cli as dev

    settings = load_settings()
    demo_dir = settings.home / "demo"
    traffic_dir = demo_dir / "traffic"
    started_servers = not dev.is_up()
    if started_servers:
        kafka_port, redis_port = _ports(settings)
        dev.up(kafka_port=kafka_port, controller_port=kafka_port + 1, redis_port=redis_port)
    else:
        typer.echo("broker and Redis already running: using them")
    children: list[Child] = []
    interrupted = False
    try:
        ensure_model(settings, demo_dir, train_customers, train_days)
        (traffic_dir / "truth.jsonl").unlink(missing_ok=True)  # the next run's, not the last
        since = datetime.now(UTC)
        for worker in workers(traffic_dir, customers, days, rate):
            children.append(_start(worker, demo_dir / f"{worker.name}.log"))
        from stream.desk.cli import demo_banner

        typer.echo(demo_banner(settings, demo_dir / "desk-login.txt"))
        typer.echo(
            f"streaming ~{rate:g} events/s of {customers} customers over {days} days "
            f"({NEW_TYPOLOGY} is new to the model); logs in {demo_dir}; metrics "
            f"http://{settings.scorer.metrics_host}:{settings.scorer.metrics_port}/metrics\n"
            "Ctrl-C to stop\n"
        )
        watch = LoopWatch(settings, traffic_dir / "truth.jsonl", since, alerts_per_minute)
        watch.run(children, demo_dir / "trainer.log", report_every_s)
    except KeyboardInterrupt:
        interrupted = True
        typer.echo("\nstopping...")
    finally:
        for child in reversed(children):
            code = child.stop()
            typer.echo(f"{child.name} stopped (exit {code}); log {child.log}")
        if started_servers and not keep_servers:
            dev.down()
    if interrupted:
        raise typer.Exit(0)
