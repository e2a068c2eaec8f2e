"""Wire formats: the events, labels and alerts that travel on riskstream's Kafka topics."""

from schemas.alert import Alert, Reason, alert_id_for
from schemas.codec import MAX_MESSAGE_BYTES, decode, encode
from schemas.common import (
    SUSPICIOUS_TYPOLOGIES,
    Channel,
    CounterpartyType,
    CustomerSegment,
    Direction,
    Typology,
)
from schemas.errors import DecodeError, RiskstreamError, SchemaError
from schemas.label import LabelEvent, LabelSource
from schemas.transaction import TransactionEvent

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SUSPICIOUS_TYPOLOGIES",
    "Alert",
    "Channel",
    "CounterpartyType",
    "CustomerSegment",
    "DecodeError",
    "Direction",
    "LabelEvent",
    "LabelSource",
    "Reason",
    "RiskstreamError",
    "SchemaError",
    "TransactionEvent",
    "Typology",
    "alert_id_for",
    "decode",
    "encode",
]
