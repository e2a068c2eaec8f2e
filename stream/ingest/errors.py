"""Errors of ``riskstream data import``: each one stops the whole import with one line that
names the file and the problem. A bad *row* is never an error: it goes to the rejects file."""

from __future__ import annotations

from stream.errors import StreamError


class IngestError(StreamError):
    """Base of import errors."""


class MappingError(IngestError):
    """The mapping file cannot be read, is not valid TOML, or does not describe a valid
    mapping (an unknown field, a value that is not a channel, a missing amount unit...)."""


class InputError(IngestError):
    """An input file cannot be imported as a whole: missing, empty, of an unknown format, a
    mapped column absent or of an unusable type, a CSV whose rows do not split into the
    header's columns, or no row that could be imported."""
