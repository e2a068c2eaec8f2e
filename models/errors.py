"""Errors raised by the models package; all derive from :class:`ModelError`."""

from __future__ import annotations

from schemas.errors import RiskstreamError


class ModelError(RiskstreamError):
    """Base of errors about models: training, registry, loading, inference."""


class ModelLoadError(ModelError):
    """A registry version is missing, incomplete, corrupt or inconsistent."""


class UnsafeModelFormat(ModelLoadError):
    """A model directory holds a format that can execute code when loaded (pickle, a torch
    ``.bin``/``.pt`` checkpoint). Only safetensors, JSON and plain-text tokenizer files load."""


class RegistryError(ModelError):
    """A registry operation cannot be done (unknown version, nothing to roll back to, ...)."""


class TrainingError(ModelError):
    """Training cannot start or cannot produce a usable model (e.g. a split has no positives)."""


class DatasetError(ModelError):
    """Simulator output cannot be turned into a training set."""
