"""Create riskstream's topics explicitly (brokers should run with auto-create off, as the dev
broker does, so a typo in a topic name fails loudly instead of creating a stray topic).

Partition counts bound the parallelism of each consumer group: the scorer reads
``transactions``, so it gets the most partitions; the other topics carry far less traffic.
Retention of ``transactions`` and ``risk.labels`` must cover the longest replay analysts run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException

# NewTopic's documented import path; confluent-kafka re-exports it without listing it.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream.kafka.errors import KafkaIOError
from stream.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


class TopicError(KafkaIOError):
    """A topic could not be created."""


TRANSACTIONS_PARTITIONS = 6
DEFAULT_PARTITIONS = 3


def standard_topics(
    topics: TopicSettings,
    *,
    transactions_partitions: int = TRANSACTIONS_PARTITIONS,
    default_partitions: int = DEFAULT_PARTITIONS,
) -> dict[str, int]:
    """Every topic riskstream uses, with its partition count, named as in ``topics``."""
    counts = {name: default_partitions for name in topics.model_dump().values()}
    counts[topics.transactions] = transactions_partitions
    return counts


def retention_configs(topics: TopicSettings, replay_days: int) -> dict[str, dict[str, str]]:
    """Topic configs: inputs kept long enough to replay; the models topic compacted (only the
    newest notice matters)."""
    keep_ms = str(replay_days * 86_400_000)
    return {
        topics.transactions: {"retention.ms": keep_ms},
        topics.labels: {"retention.ms": keep_ms},
        topics.dlq: {"retention.ms": keep_ms},
        topics.alerts: {"retention.ms": keep_ms},
        topics.models: {"cleanup.policy": "compact"},
    }


def ensure_topics(
    kafka_settings: KafkaSettings,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create each missing topic with the given partition count; return the ones created.

    Topics that already exist are left alone: partitions can only ever be added, which would
    move keys between partitions, so a different count is logged for a human to decide.
    """
    admin = AdminClient(kafka_settings.client_config())
    new_topics = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict((configs or {}).get(name, {})),
        )
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
            raise TopicError(
                f"creating topic {name!r} on {kafka_settings.bootstrap_servers} did not finish "
                f"within {timeout_s:.0f} s"
            ) from error
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(
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
                log.warning(
                    "topic %s exists with %d partitions, not the %d asked for; left as is",
                    name,
                    actual,
                    topics[name],
                )
    log.info("topics created: %s; already there: %s", created or "none", existing or "none")
    return sorted(created)
