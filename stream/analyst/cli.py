"""`riskstream run analyst`: the simulated analyst desk (demos and benchmarks)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from stream.settings import load_settings

log = logging.getLogger(__name__)


def analyst(
    truth: Annotated[
        Path,
        typer.Option(
            help="The simulation's truth file (truth.jsonl or truth.parquet): run "
            "`riskstream simulate --out DIR --kafka` and give DIR/truth.jsonl."
        ),
    ],
    delay: Annotated[
        str,
        typer.Option(
            help="Review time in event time: an alert on an event at t is dispositioned with "
            "label_time t + DELAY, and sent once the alerts' event times pass it (e.g. 4h, 1d)."
        ),
    ] = "4h",
    flush_after_s: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Wall seconds without any alert after which every held disposition is sent "
            "(the traffic has ended, so event time will not move on).",
        ),
    ] = 30.0,
    group_id: Annotated[str, typer.Option(help="Consumer group on the alerts topic.")] = (
        "riskstream-analyst"
    ),
    health_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve /health and /ready on this port (for containers)."
        ),
    ] = None,
    health_host: Annotated[str, typer.Option(help="Bind address of /health.")] = "127.0.0.1",
) -> None:
    """Disposition the live alerts from the simulator's truth, as analysts would: true or
    false positive, with the alert id, on the labels topic, after a review delay.

    For demos and benchmarks of the feedback loop; missed fraud reaches the trainer as the
    simulator's chargebacks and confirmed cases. Exit codes: 0 after SIGTERM/SIGINT, 2 on a
    fatal Kafka error."""
    from stream.analyst.truth import TruthFile
    from stream.analyst.worker import SimulatedAnalyst
    from stream.replay.cli import parse_duration

    settings = load_settings()
    if not truth.is_file():
        log.warning("%s does not exist yet: alerts are looked up once it does", truth)
    health = server = None
    if health_port is not None:
        from prometheus_client import CollectorRegistry

        from stream.pipeline.health import Health, MetricsServer

        health = Health(stall_after_s=60.0)
        server = MetricsServer(health_host, health_port, CollectorRegistry(), health).start()
    desk = SimulatedAnalyst(
        settings,
        TruthFile(truth.resolve()),
        delay=parse_duration(delay),
        flush_after_s=flush_after_s,
        group_id=group_id,
        health=health,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        desk.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = desk.run()
    finally:
        if server is not None:
            server.stop()
    raise typer.Exit(code)
