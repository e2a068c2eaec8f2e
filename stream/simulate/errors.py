"""Errors of the transaction simulator (``riskstream simulate``)."""

from __future__ import annotations

from stream.errors import StreamError


class SimulationError(StreamError):
    """Base of every error the simulator raises on purpose."""


class SimulationConfigError(SimulationError):
    """A simulation option is malformed or inconsistent (bad ``--mix``, unknown typology...)."""


class OutputError(SimulationError):
    """Output files could not be written (e.g. the directory holds a previous run)."""


class DeliveryError(SimulationError):
    """Kafka did not acknowledge every produced message; carries the counts."""

    def __init__(self, message: str, *, failed: int, undelivered: int) -> None:
        super().__init__(message)
        self.failed = failed
        self.undelivered = undelivered
