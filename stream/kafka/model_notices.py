"""Notices on the models topic (``risk.models``): a ``schemas.ModelNotice`` written when the
champion or the shadow changes, read by running scorers so they look at the registry at once.

Here, not beside the scorer's model watcher, because the writers are the trainer and the
model command line: neither should reach into the scorer to tell it something.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from confluent_kafka import KafkaException, Producer

from schemas.codec import decode, encode
from schemas.errors import DecodeError
from schemas.model_notice import REASON_LIMIT, ModelNotice, NoticeAction
from stream.kafka.clients import producer_config
from stream.settings import Settings

log = logging.getLogger(__name__)

NOTICE_KEY = b"champion"


def announce_champion(
    settings: Settings,
    version: str,
    action: NoticeAction,
    reason: str = "",
    *,
    timeout_s: float = 30.0,
) -> None:
    """Tell running scorers (and anyone else listening) that the champion (or the shadow)
    changed; raises KafkaException if the notice is not delivered within ``timeout_s``."""
    notice = ModelNotice(
        action=action,
        version=version,
        reason=reason[:REASON_LIMIT],
        at=datetime.now(UTC),
    )
    producer = Producer(producer_config(settings.kafka))
    producer.produce(settings.topics.models, key=NOTICE_KEY, value=encode(notice))
    if producer.flush(timeout_s) != 0:
        raise KafkaException(
            f"model notice for {version} not delivered to {settings.topics.models}"
        )


def read_notice(raw: bytes | None) -> ModelNotice | None:
    """The notice in ``raw``, or None (logged) when it is not one: a reader acts on the
    registry's pointers anyway, so a malformed notice is only worth a warning."""
    try:
        return decode(ModelNotice, raw)
    except DecodeError as exc:
        log.warning("ignoring a malformed model notice: %s", exc)
        return None
