"""Errors of the shared pipeline pieces (scored records, the batch driver); each under
`PipelineError`."""

from __future__ import annotations

from stream.errors import StreamError


class PipelineError(StreamError):
    """Base of errors raised by ``stream.pipeline``."""


class OwnershipLost(PipelineError):
    """A commit was refused because the consumer group moved the partitions on. Not retried:
    the outputs are out, and the new owner reprocesses the batch from the last commit."""


class CommitFailed(PipelineError):
    """A commit failed in a way retrying can help (the coordinator is away or busy)."""


class SourceFailed(PipelineError):
    """The source cannot go on (a fatal client error): the worker stops without committing."""


class ShutdownIncomplete(PipelineError):
    """The shutdown bound passed with a batch unfinished; it was not committed and will be
    reprocessed."""


class SinkFailed(PipelineError):
    """The sink cannot go on (a transaction failed in a way no retry helps)."""
