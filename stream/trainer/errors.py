"""Errors of the feedback-loop worker."""

from __future__ import annotations

from stream.errors import StreamError


class TrainerError(StreamError):
    """Base of the trainer's errors."""


class CasesUnavailable(TrainerError):
    """Redis did not answer while reading or writing labelled cases.

    Retriable: writes are idempotent per label id, so the label is simply processed again.
    """

    retriable = True


class FineTuneFailed(TrainerError):
    """A fine-tune child process failed or returned no usable report; the champion stays."""
