"""Errors of the context store."""

from __future__ import annotations

from stream.errors import StreamError


class ContextError(StreamError):
    """The context store failed in a way retrying will not fix (a bug, a misconfigured Redis)."""


class ContextUnavailable(ContextError):
    """Redis is down, timing out, loading its data set or failing over.

    Retriable: nothing of the batch may be assumed applied or not applied, and that is fine,
    because updates are idempotent per event id. The scorer pauses, then retries the whole
    batch; it must not commit the batch's offsets before a retry succeeds.
    """

    retriable = True


class ContextStateLost(ContextError):
    """The namespace's marker key vanished while this store was using it.

    Redis restarted without persistence, was flushed, or evicted keys (run it with
    ``maxmemory-policy noeviction``). Carrying on would compute every window from nothing and
    call every counterparty new, silently; stopping makes an operator decide (restore Redis, or
    accept the reset with :meth:`ContextStore.initialize_namespace`).
    """


class ContextLayoutMismatch(ContextError):
    """The namespace holds state written in another layout than this code's (an upgrade onto
    an existing namespace): the scripts refuse to read it, and the call wrote nothing.

    Not retriable: no retry changes the stored layout. Stop, and point the scorer at a fresh
    namespace (``RISKSTREAM_CONTEXT__NAMESPACE``) or drop the old one.
    """

    retriable = False


class ContextStartupFailed(ContextError):
    """The context store cannot be opened: Redis refused the credentials, did not answer in
    time, or the namespace was written with another hash key. Not retriable by the worker:
    configuration, or a Redis that stays away."""
