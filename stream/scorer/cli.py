"""`riskstream run scorer`: the streaming scorer as a long-running process."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from types import FrameType
from typing import Annotated, Literal

import typer

from stream.settings import load_settings

log = logging.getLogger(__name__)

# Exit code when the shutdown bound is blown: the supervisor sees a failure, and the batch in
# flight was not committed, so it is reprocessed.
EXIT_SHUTDOWN_TIMEOUT = 3
# Exit code when the scorer cannot start or go on (wrong credentials, fenced): as ScorerRunner.run.
EXIT_FATAL = 2


def scorer(
    model_version: Annotated[
        str | None, typer.Option(help="Score with this version only (no hot reload).")
    ] = None,
    batch_max_size: Annotated[
        int | None, typer.Option(min=1, help="Override scorer.batch_max_size.")
    ] = None,
    batch_max_wait_ms: Annotated[
        int | None, typer.Option(min=0, help="Override scorer.batch_max_wait_ms.")
    ] = None,
    delivery: Annotated[
        Literal["at_least_once", "exactly_once"] | None,
        typer.Option(help="Override scorer.delivery."),
    ] = None,
    accept_context_loss: Annotated[
        bool,
        typer.Option(help="Start even though Redis lost the context namespace (starts empty)."),
    ] = False,
) -> None:
    """Consume transactions, score micro-batches and produce alerts until SIGTERM/SIGINT.

    On a signal the batch in flight is finished, its outputs flushed and its offsets
    committed. Nothing uncommitted is ever lost: whatever the exit, it is reprocessed.

    \b
    Exit codes:
      0  stopped by SIGTERM/SIGINT, everything committed
      1  the batch in flight could not be finished within scorer.shutdown_timeout_s
      2  cannot start or go on: no champion or one that cannot be loaded, Kafka or Redis
         refused the credentials, Redis lost the context, fenced by a newer instance
      3  stopping took longer than scorer.shutdown_timeout_s + 10 s (watchdog)
    """
    from stream.context.errors import ContextError
    from stream.scorer.app import build_scorer
    from stream.scorer.errors import ScorerFatal
    from stream.scorer.memory import fix_mmap_threshold, freeze_startup_objects

    fix_mmap_threshold()  # before the model allocates anything; see stream/scorer/memory.py

    settings = load_settings()
    overrides = {
        key: value
        for key, value in {
            "batch_max_size": batch_max_size,
            "batch_max_wait_ms": batch_max_wait_ms,
            "delivery": delivery,
        }.items()
        if value is not None
    }
    if overrides:
        settings = settings.model_copy(
            update={"scorer": settings.scorer.model_copy(update=overrides)}
        )
    try:
        app = build_scorer(
            settings, pinned_version=model_version, accept_context_loss=accept_context_loss
        )
    except (ScorerFatal, ContextError) as exc:
        log.critical("scorer cannot start: %s", exc)
        raise typer.Exit(EXIT_FATAL) from None
    hard_limit_s = settings.scorer.shutdown_timeout_s + 10

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in flight", signal.Signals(signum).name)
        app.runner.request_stop()
        # A last resort against a wedged client library: the bound is a promise to ops.
        timer = threading.Timer(hard_limit_s, os._exit, args=(EXIT_SHUTDOWN_TIMEOUT,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    freeze_startup_objects()
    try:
        code = app.runner.run()
    finally:
        app.close()
        # Frozen objects are not freed at exit; native bindings (triton's nanobind) then report
        # hundreds of "leaked" functions on stderr. Hand them back to the collector first.
        gc.unfreeze()
    raise typer.Exit(code)
