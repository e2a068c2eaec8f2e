"""Errors of the schemas layer, and the base error every riskstream package derives from.

The base lives here because ``schemas`` is the lowest layer: ``stream`` and ``models`` both
depend on it, so their own error types can share one root without an import cycle.
"""

from __future__ import annotations


class RiskstreamError(Exception):
    """Root of every error riskstream raises on purpose."""


class SchemaError(RiskstreamError):
    """Base of the schemas layer's errors: a wire format, or a data format built on it (the
    context features, a story record, a narrative and its spec), used wrongly."""


class DecodeError(SchemaError):
    """A message could not be decoded into a valid model.

    Keeps the original bytes so a dead-letter producer can republish them unchanged, and a
    one-line ``reason`` that names the field and the problem (safe to log: it never includes
    the payload itself, which may hold personal data).
    """

    def __init__(self, reason: str, raw: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
