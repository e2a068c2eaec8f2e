"""Errors of backtest reports."""

from __future__ import annotations

from stream.errors import StreamError


class BacktestError(StreamError):
    """A report cannot be made: an unknown run, missing files, no truth to judge by."""
