"""The demo's terminal: alerts, the loop's events, and live alert quality per model version.

One reader of the scores and alerts topics (from the demo's start, never committing), the
workers' logs for the lines that tell the loop's story (a cycle starting, its decision, the
scorer switching models), and every ``report_every_s`` a table of precision and recall per
model version (:mod:`stream.demo_view`).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from confluent_kafka import Consumer

from schemas import Alert, DecodeError, decode
from stream.alerts.tail import start_offsets
from stream.alerts.view import render
from stream.analyst.truth import TruthFile
from stream.demo_view import LiveQuality
from stream.kafka.clients import consumer_config
from stream.settings import Settings

if TYPE_CHECKING:
    from stream.demo import Child

STORY = (
    "starting a finetune cycle",
    "finetune cycle",
    "review cycle",
    "cycle failed",
    "cannot continue",
    "cannot start",
    "now scoring with model",
)
"""Log lines (trainer and scorer) that are the loop's events, shown as they happen."""

QUIET_END_S = 60.0
"""After the traffic ended: stop once nothing was scored for this long."""


class LogFollower:
    """New lines of a log file that contain one of ``STORY``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def story(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                chunk = file.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._offset += end
        lines = chunk[:end].decode(errors="replace").splitlines()
        return [line for line in lines if any(mark in line for mark in STORY)]


class LoopWatch:
    def __init__(
        self, settings: Settings, truth: Path, since: datetime, alerts_per_minute: int
    ) -> None:
        self._settings = settings
        self._truth = TruthFile(truth)
        self._since = since
        self._alert_gap_s = 60.0 / alerts_per_minute if alerts_per_minute else None
        self.quality = LiveQuality()
        self.alerts_seen = 0

    def run(self, children: list[Child], trainer_log: Path, report_every_s: float) -> None:
        by_name = {child.name: child for child in children}
        logs = [LogFollower(trainer_log), LogFollower(by_name["scorer"].log)]
        topics = self._settings.topics
        consumer = Consumer(
            consumer_config(
                self._settings.kafka, f"riskstream-demo-{uuid.uuid4().hex[:8]}",
                auto_offset_reset="latest",
            )
        )  # fmt: skip
        try:
            consumer.assign(
                start_offsets(consumer, topics.scores, self._since)
                + start_offsets(consumer, topics.alerts, self._since)
            )
            last_alert_shown = last_report = last_scored = time.monotonic()
            while True:
                for message in consumer.consume(500, timeout=0.5):
                    if message.error() is not None:
                        continue
                    raw = message.value() or b""
                    if message.topic() == topics.scores:
                        self.quality.add(raw, self._truth.get)
                        last_scored = time.monotonic()
                    elif self._alert_gap_s and time.monotonic() - last_alert_shown >= (
                        self._alert_gap_s
                    ):
                        shown = self._show_alert(raw)
                        last_alert_shown = time.monotonic() if shown else last_alert_shown
                for follower in logs:
                    for line in follower.story():
                        typer.secho(line, fg=typer.colors.CYAN)
                if time.monotonic() - last_report >= report_every_s:
                    self.report()
                    last_report = time.monotonic()
                if by_name["scorer"].process.poll() is not None:
                    typer.secho(
                        f"the scorer exited; see {by_name['scorer'].log}", fg=typer.colors.RED
                    )
                    break
                traffic_done = by_name["simulator"].process.poll() is not None
                if traffic_done and time.monotonic() - last_scored >= QUIET_END_S:
                    break
        finally:
            consumer.close()
            self.report()

    def _show_alert(self, raw: bytes) -> bool:
        try:
            alert = decode(Alert, raw)
        except DecodeError:
            return False
        typer.echo(render(alert) + "\n")
        return True

    def report(self) -> None:
        lines = self.quality.table()
        if len(lines) == 1:
            typer.echo("live alert quality: nothing scored yet")
            return
        typer.secho("\nlive alerts per model version (truth: the simulator's)", bold=True)
        for line in lines:
            typer.echo("  " + line)
        change = self.quality.change()
        if change is not None:
            typer.secho(change, fg=typer.colors.GREEN, bold=True)
        typer.echo("")
