"""Start-up shared by the workers that keep context (the scorer, the trainer): the context
store opened once Redis answers, and the namespace marked in use when it is new.

Both raise ``ContextStartupFailed`` (a ``ContextError``) for what waiting will not fix; the
workers' command lines end with exit code 2 on any ``ContextError`` at start.
"""

from __future__ import annotations

import logging
import time

import redis

from stream.context.errors import ContextLayoutMismatch, ContextStartupFailed, ContextUnavailable
from stream.context.store import ContextStore
from stream.kafka.groups import committed_offsets
from stream.redis_client import connect
from stream.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


def wait_for_context_store(settings: Settings, deadline_s: float = 120.0) -> ContextStore:
    """Open the context store, waiting for Redis to come up (containers start in any order).
    The namespace is not marked in use here (see :func:`claim_namespace`).

    Raises ContextStartupFailed at once if Redis refuses the password, or the namespace was
    written with another hash key: that is configuration, not a server still starting; and
    when Redis has not answered for ``deadline_s``."""
    client = connect(settings.redis)
    started = time.monotonic()
    while True:
        try:
            return ContextStore(client, settings.context)
        except ContextLayoutMismatch as exc:
            raise ContextStartupFailed(str(exc)) from exc
        except ContextUnavailable as exc:
            if isinstance(exc.__cause__, redis.AuthenticationError):
                # Redis answered and said no: waiting will not change its mind.
                raise ContextStartupFailed(
                    f"Redis refused the credentials for {settings.redis.safe_url()}: "
                    f"{exc.__cause__}"
                ) from exc
            if time.monotonic() - started > deadline_s:
                raise ContextStartupFailed(
                    f"Redis at {settings.redis.safe_url()} did not answer for "
                    f"{deadline_s:.0f} s: {exc}"
                ) from exc
            log.warning("waiting for Redis at %s: %s", settings.redis.safe_url(), exc)
            time.sleep(2.0)


def mark_if_new(store: ContextStore, kafka: KafkaSettings, group: str, topic: str) -> bool:
    """Mark the context namespace in use if it is new; returns whether it is marked now.

    An unmarked namespace is either new or lost (Redis came back empty). Kafka tells them
    apart: a consumer group that never committed on its input topic has processed nothing, so
    there is nothing to lose and the namespace is marked. A group that has committed expects
    its context in Redis: then nothing is marked (False), and only an operator's
    :meth:`ContextStore.initialize_namespace` (``--accept-context-loss``) may mark it
    (docs/scorer.md, "Redis loss"). Raises GroupOffsetsUnavailable when Kafka cannot say."""
    if store.namespace_in_use():
        return True
    if committed_offsets(kafka, group, topic):
        return False
    store.initialize_namespace(only_if_missing=True)
    log.info("new context namespace %r (group %r has not committed on %r yet)",
             store.namespace, group, topic)  # fmt: skip
    return True
