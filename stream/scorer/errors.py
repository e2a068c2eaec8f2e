"""Errors of the streaming scorer."""

from __future__ import annotations

from stream.errors import StreamError


class ScorerError(StreamError):
    """Base of scorer errors."""


class ScorerFatal(ScorerError):
    """The scorer cannot go on (e.g. fenced by a newer instance in exactly-once mode); it
    exits non-zero without committing, so its uncommitted work is reprocessed elsewhere."""
