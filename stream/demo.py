"""`riskstream demo`: the whole system on one machine, with alerts on screen.

1. a real Kafka broker and redis-server on 127.0.0.1 (`riskstream dev up`), unless running;
2. a model: if the registry has no champion, simulate a labelled training set and train the
   small `demo` preset (a few minutes on 2 cores), then promote it;
3. the scorer as a child process (`riskstream run scorer`), and the case desk
   (`riskstream run desk`, its URL and a demo login printed);
4. the simulator as a child process, streaming fresh traffic into `transactions` at a rate;
5. alerts printed here as the scorer emits them.

Ctrl-C (or the simulator finishing, then a quiet spell) ends it: the simulator stops, the
scorer drains and commits, and the broker and Redis are stopped if the demo started them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from stream.settings import Settings, load_settings

DEMO_TRAIN_START = "2026-01-01"
DEMO_STREAM_START = "2026-03-01"


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


def _riskstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def _start(name: str, args: list[str], log: Path) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    return Child(name, process, log)


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
        typer.echo(f"model: none yet - simulating {customers} customers x {days} days to train on")
        subprocess.run(
            _riskstream(
                "simulate", "--out", str(sim_dir), "--customers", str(customers), "--days",
                str(days), "--start-date", DEMO_TRAIN_START, "--seed", "7", "--overwrite",
            ),
            check=True,
        )  # fmt: skip
    typer.echo("model: training the small demo model (progress below)")
    subprocess.run(
        _riskstream("model", "train", "--data", str(sim_dir), "--preset", "demo", "--promote"),
        check=True,
    )
    champion = registry.champion()
    if champion is None:
        raise typer.Exit(1)
    return champion


def demo(
    customers: Annotated[int, typer.Option(help="Customers in the streamed traffic.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of traffic to stream.")] = 14,
    rate: Annotated[float, typer.Option(help="Events per second streamed in.")] = 200.0,
    train_customers: Annotated[
        int, typer.Option(help="Customers in the demo model's training data.")
    ] = 800,
    train_days: Annotated[int, typer.Option(help="Days of training data.")] = 45,
    min_score: Annotated[float, typer.Option(help="Only show alerts scoring at least this.")] = 0.0,
    keep_servers: Annotated[
        bool, typer.Option(help="Leave the broker and Redis running afterwards.")
    ] = False,
) -> None:
    """Run the main job on the embedded default: local Kafka and Redis, a small model,
    synthetic traffic streaming in, and the alerts shown as they arrive."""
    from stream.alerts.tail import read_alerts
    from stream.alerts.view import AlertFilter, SeenAlerts, render
    from stream.devenv import cli as dev

    settings = load_settings()
    demo_dir = settings.home.resolve() / "demo"
    started_servers = not dev.is_up()
    if started_servers:
        dev.up(kafka_port=9092, controller_port=9093, redis_port=6379)
    else:
        typer.echo("broker and Redis already running: using them")
    children: list[Child] = []
    interrupted = False
    try:
        ensure_model(settings, demo_dir, train_customers, train_days)
        since = datetime.now(UTC)
        scorer = _start("scorer", _riskstream("run", "scorer"), demo_dir / "scorer.log")
        children.append(scorer)
        from stream.desk.cli import demo_banner

        children.append(_start("desk", _riskstream("run", "desk"), demo_dir / "desk.log"))
        typer.echo(demo_banner(settings, demo_dir / "desk-login.txt"))
        simulator = _start(
            "simulator",
            _riskstream(
                "simulate", "--kafka", "--customers", str(customers), "--days", str(days),
                "--start-date", DEMO_STREAM_START, "--seed", str(int(time.time()) % 10_000),
                "--rate", str(rate), "--no-progress",
            ),
            demo_dir / "simulator.log",
        )  # fmt: skip
        children.append(simulator)
        typer.echo(
            f"streaming ~{rate:g} events/s; scorer log {scorer.log}; metrics "
            f"http://{settings.scorer.metrics_host}:{settings.scorer.metrics_port}/metrics\n"
            "alerts (Ctrl-C to stop):\n"
        )
        chosen = AlertFilter(min_score=min_score)
        seen = SeenAlerts()  # the reader restarts from `since` after each quiet spell
        shown = 0
        while True:
            for _raw, alert in read_alerts(
                settings.kafka, settings.topics.alerts, since, idle_timeout_s=5
            ):
                if chosen.accepts(alert) and seen.first_time(alert.alert_id):
                    shown += 1
                    typer.echo(render(alert) + "\n")
            if scorer.process.poll() is not None:
                typer.secho(f"the scorer exited; see {scorer.log}", fg=typer.colors.RED)
                break
            if simulator.process.poll() is not None:
                break  # all traffic streamed and a quiet spell passed: the scorer is done
        typer.echo(f"{shown} alerts shown")
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
