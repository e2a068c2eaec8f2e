"""Errors of the narrative builder."""

from __future__ import annotations

from schemas.errors import SchemaError


class NarrativeError(SchemaError):
    """A narrative cannot be built as asked."""


class SpecError(NarrativeError):
    """A narrative spec is malformed, or was made for another template or feature version."""
