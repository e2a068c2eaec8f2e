"""What a consumer group has committed, asked of the broker (not of a consumer in the group).

The scorer asks at start-up, before it joins: a group that has committed offsets on the input
topic has processed events, so their context must be in Redis - an unmarked context namespace
then means Redis lost it, not that this is a first start (docs/scorer.md, "Redis loss").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from stream.kafka.errors import KafkaIOError
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

# Errors waiting cannot fix: librdkafka retries a refused login forever, reporting it only to
# error_cb, while the request itself just times out.
_CREDENTIAL_ERRORS = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


class GroupOffsetsUnavailable(KafkaIOError):
    """The broker did not say what the group committed within the deadline."""


def committed_offsets(
    kafka: KafkaSettings, group_id: str, topic: str, deadline_s: float = 60.0
) -> dict[int, int]:
    """{partition: committed offset} of ``group_id`` on ``topic``; {} when it never committed.

    Retries what the broker reports as retriable (a coordinator still loading after a broker
    start, a broker not up yet) until ``deadline_s``; refused credentials end it at once."""
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in _CREDENTIAL_ERRORS:
            refused.append(error)

    config: dict[str, Any] = {**kafka.client_config(), "error_cb": on_error}
    admin = AdminClient(config)
    started = time.monotonic()
    while True:
        request = [ConsumerGroupTopicPartitions(group_id)]
        try:
            (future,) = admin.list_consumer_group_offsets(request, request_timeout=10).values()
            result = future.result()
        except KafkaException as exc:
            error = exc.args[0]
            admin.poll(0)  # serve error_cb
            if refused:
                raise GroupOffsetsUnavailable(
                    f"Kafka refused the credentials of user {kafka.sasl_username!r} at "
                    f"{kafka.bootstrap_servers}: {refused[0].str()}"
                ) from exc
            retriable = getattr(error, "retriable", lambda: False)()
            if retriable and time.monotonic() - started < deadline_s:
                log.info("waiting for the offsets of group %s: %s", group_id, error)
                time.sleep(1.0)
                continue
            raise GroupOffsetsUnavailable(
                f"cannot read the committed offsets of consumer group {group_id!r}: {error}"
            ) from exc
        return {
            tp.partition: tp.offset
            for tp in result.topic_partitions or []
            if tp.topic == topic and tp.offset >= 0
        }
