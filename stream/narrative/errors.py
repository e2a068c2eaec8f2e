"""Errors of the narrative builder."""

from __future__ import annotations

from stream.errors import StreamError


class NarrativeError(StreamError):
    """A narrative cannot be built as asked."""


class SpecError(NarrativeError):
    """A narrative spec is malformed, or was made for another template or feature version."""
