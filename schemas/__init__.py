"""The contract layer: the data formats every other part of riskstream agrees on.

- wire formats: the events, labels and alerts that travel on riskstream's Kafka topics
  (``transaction``, ``label``, ``alert``, ``codec``);
- reference data: ISO codes, the thresholds and lists that define the typologies
  (``reference``);
- the context features of an event and the story record format (``features``, ``story``);
- narratives (``narrative``): an event, its features and its story put into words - a
  versioned data format (template version + fitted spec) between the context and the model.

Layers run one way: ``stream`` (Kafka, Redis, the workers) imports ``models`` (the classifier,
training, the registry), and both import ``schemas``, which imports neither (``make lint``
checks it with import-linter, see ``[tool.importlinter]`` in pyproject.toml). Everything here
is pure: no Redis, Kafka, network or files beyond package data (``narrative/default_spec.json``,
the backbone's tokenizer file), so the context store, the scorer, the trainer and the model
all build the same features and narratives from the same code, and a replay narrates exactly
what live traffic did. The features, story and narrative live here rather than in ``stream``
because the model reads them too: a model is trained on, and served with, one features version
and one narrative version, so they are a format between the two sides, not a detail of either.
``python -m schemas.generate`` (a developer's tool, imported by nothing) is the one module that
writes files: the JSON Schemas in ``jsonschema/``.
"""

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
