"""The model lane: one worker thread that runs batch n's model call while the caller's thread
prepares batch n+1 and finishes batch n-1.

The model call is the one step that touches neither Kafka nor Redis and holds the GIL least
(torch releases it inside its kernels), so it is the step worth moving off the thread that
owns the clients. One worker keeps model calls in batch order; torch's own thread pool does
the parallel work inside each call. Used by the live scorer and by replays alike.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

Batch = TypeVar("Batch")
Scores = TypeVar("Scores")


class ModelLane(Generic[Batch, Scores]):
    """``score`` runs here, one batch at a time; in the scorer a ``PreparedBatch`` in and its
    ``ModelScores`` out."""

    def __init__(self, score: Callable[[Batch], Scores]) -> None:
        self._score = score
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskstream-model")
        self._held: tuple[Batch, Future[Scores]] | None = None

    @property
    def busy(self) -> Future[Scores] | None:
        """The model call in the lane (done or not); None when the lane holds no batch."""
        return self._held[1] if self._held is not None else None

    def push(self, prepared: Batch | None) -> tuple[Batch, Scores] | None:
        """Wait for the batch in the lane, start ``prepared`` (if any), and return the batch
        that was there with its scores (None if the lane was empty). An exception of the
        model call - a bug, not a poison event: those are isolated inside ``score`` - is
        raised here, and ``prepared`` is then not started."""
        held, self._held = self._held, None
        scored = (held[0], held[1].result()) if held is not None else None
        if prepared is not None:
            self._held = (prepared, self._executor.submit(self._score, prepared))
        return scored

    def take_if_done(self) -> tuple[Batch, Scores] | None:
        """The batch in the lane with its scores if its model call has finished (the lane is
        then empty); None if the lane is empty or still busy."""
        held = self._held
        if held is None or not held[1].done():
            return None
        self._held = None
        return held[0], held[1].result()

    def close(self) -> None:
        """Wait for a model call still running (at most one batch's model time) and stop the
        worker; a batch still held is dropped (it was not committed: reprocessed)."""
        self._held = None
        self._executor.shutdown(wait=True, cancel_futures=True)
