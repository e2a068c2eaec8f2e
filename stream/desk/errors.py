"""Errors of the case desk."""

from __future__ import annotations

from stream.errors import StreamError


class DeskError(StreamError):
    """Base of every error raised by ``stream.desk``."""


class DatabaseUnavailable(DeskError):
    """PostgreSQL did not answer or dropped the connection; retriable."""


class UserError(DeskError):
    """A user-management command was given something unusable (unknown user, bad role...)."""


class DispositionRefused(DeskError):
    """The disposition cannot be recorded (alert already closed, typology missing...)."""
