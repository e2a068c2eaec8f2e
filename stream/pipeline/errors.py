"""Errors of the shared pipeline pieces (scored records); each under `PipelineError`."""

from __future__ import annotations

from stream.errors import StreamError


class PipelineError(StreamError):
    """Base of errors raised by ``stream.pipeline``."""
