"""The Kafka edge: client configuration, a producer that never drops a message silently, and
consumer settings for at-least-once and exactly-once processing."""

from stream.kafka.clients import (
    OutgoingMessage,
    TrackedProducer,
    consumer_config,
    producer_config,
)
from stream.kafka.errors import DeliveryFailed, FlushTimeout, KafkaIOError

__all__ = [
    "DeliveryFailed",
    "FlushTimeout",
    "KafkaIOError",
    "OutgoingMessage",
    "TrackedProducer",
    "consumer_config",
    "producer_config",
]
