"""Errors shared across the stream package; each area adds its own under `StreamError`."""

from __future__ import annotations

from schemas.errors import RiskstreamError


class StreamError(RiskstreamError):
    """Base of errors raised by the streaming side."""
