"""Errors of replays (``riskstream replay``)."""

from __future__ import annotations

from stream.errors import StreamError


class ReplayError(StreamError):
    """Base of replay errors."""


class SourceError(ReplayError):
    """The input cannot be read as asked: a missing file or topic, an unknown partition, an
    empty or inverted range, or a partition that stopped delivering before its end offset."""


class LabelSourceError(ReplayError):
    """Labels could not be read (a missing file, a topic that does not exist)."""


class RunExists(ReplayError):
    """The run id is taken: its directory or its Redis namespace already exists. A run is never
    resumed or overwritten, because its outputs would mix two replays."""
