"""Create riskstream's topics explicitly (the dev broker has ``auto.create.topics.enable=false``).

Partition counts bound the parallelism of each consumer group: the scorer reads
``transactions``, so it gets the most partitions; the other topics carry far less traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException

# NewTopic's documented import path; confluent-kafka re-exports it without listing it.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream.devenv.errors import DevEnvError
from stream.settings import KafkaSettings, TopicSettings

logger = logging.getLogger(__name__)

TRANSACTIONS_PARTITIONS = 6
DEFAULT_PARTITIONS = 3


def standard_topics(topics: TopicSettings) -> dict[str, int]:
    """Every topic riskstream uses, with its partition count, named as in ``topics``."""
    counts = {name: DEFAULT_PARTITIONS for name in topics.model_dump().values()}
    counts[topics.transactions] = TRANSACTIONS_PARTITIONS
    return counts


def ensure_topics(
    kafka_settings: KafkaSettings,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create each missing topic with the given partition count; return the ones created.

    Topics that already exist are left alone: partitions can only ever be added, which would
    move keys between partitions, so a different count is logged for a human to decide.
    """
    admin = AdminClient(kafka_settings.client_config())
    new_topics = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
        for name, partitions in topics.items()
    ]
    futures = admin.create_topics(
        new_topics, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    created: list[str] = []
    existing: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except TimeoutError as error:
            raise DevEnvError(
                f"creating topic {name!r} on {kafka_settings.bootstrap_servers} did not finish "
                f"within {timeout_s:.0f} s"
            ) from error
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DevEnvError(
                    f"creating topic {name!r} on {kafka_settings.bootstrap_servers} failed: "
                    f"{kafka_error.str()}"
                ) from error
            existing.append(name)
        else:
            created.append(name)
    if existing:
        metadata = admin.list_topics(timeout=timeout_s)
        for name in existing:
            actual = len(metadata.topics[name].partitions)
            if actual != topics[name]:
                logger.warning(
                    "topic %s exists with %d partitions, not the %d asked for; left as is",
                    name,
                    actual,
                    topics[name],
                )
    logger.info("topics created: %s; already there: %s", created or "none", existing or "none")
    return sorted(created)
