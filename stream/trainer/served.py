"""A registry version as a feedback cycle uses it: scoring stored cases and scored records,
with the narratives rebuilt for its own spec when they were written with another."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from models.examples import NarrativeSet
from models.inference import LoadedModel, from_classifier
from models.registry import Registry, StoredModel
from schemas import TransactionEvent, decode
from schemas.errors import DecodeError
from schemas.features import FEATURE_NAMES, ContextFeatures, select_features
from schemas.narrative import NarrativeSpec, build_narrative, default_spec
from schemas.narrative.builder import SEPARATOR
from schemas.story import unpack_story
from stream.trainer.cases import LabelledCase

log = logging.getLogger(__name__)


class NarratedItem(Protocol):
    """A labelled case or a scored record: what a narrative can be (re)built from."""

    @property
    def event(self) -> dict[str, Any]: ...
    @property
    def narrative(self) -> str: ...
    @property
    def narrative_version(self) -> str: ...
    @property
    def features(self) -> tuple[float, ...]: ...
    @property
    def clause_ids(self) -> tuple[str, ...]: ...
    @property
    def event_time_ms(self) -> int: ...
    @property
    def story(self) -> str: ...


@dataclass
class ServedModel:
    """A registry version with what scoring and narrating for it need."""

    stored: StoredModel
    loaded: LoadedModel
    spec: NarrativeSpec

    @classmethod
    def load(cls, registry: Registry, version: str) -> ServedModel:
        stored = registry.load(version)
        spec = (
            NarrativeSpec.from_json(orjson.dumps(stored.narrative_spec))
            if stored.narrative_spec
            else default_spec()
        )
        loaded = from_classifier(
            stored.model,
            stored.tokenizer,
            stored.thresholds,
            version=version,
            narrative_spec=stored.narrative_spec,
        )
        return cls(stored, loaded, spec)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The numeric features this model (and a fine-tune of it) reads, in its order."""
        return tuple(self.stored.model.config.feature_names) or self.spec.feature_names

    def features(self, items: Sequence[NarratedItem]) -> NDArray[np.float32]:
        """The items' stored features (every feature the scorer computes), as this model
        reads them."""
        rows = np.asarray([i.features for i in items], dtype=np.float32)
        return select_features(rows.reshape(len(items), len(FEATURE_NAMES)), self.feature_names)

    def texts(self, items: Sequence[NarratedItem]) -> list[str]:
        """The narratives as this model reads them: the stored text when it was written with
        this model's spec, else rebuilt from the stored event and features with it."""
        out = []
        for item in items:
            if item.narrative_version == self.spec.version:
                out.append(item.narrative)
                continue
            try:
                event = decode(TransactionEvent, orjson.dumps(item.event))
            except DecodeError as exc:  # stored by the scorer after decoding: schema moved on
                log.warning("keeping the stored narrative of an undecodable event: %s", exc)
                out.append(item.narrative)
                continue
            story = unpack_story(bytes.fromhex(item.story))
            out.append(
                build_narrative(event, ContextFeatures(*item.features), self.spec, story).text
            )
        return out

    def scores(self, items: Sequence[NarratedItem]) -> NDArray[np.float32]:
        if not items:
            return np.zeros(0, dtype=np.float32)
        return self.loaded.predict_batch(self.texts(items), self.features(items)).scores


def narrative_set(model: ServedModel, cases: Sequence[LabelledCase]) -> NarrativeSet:
    texts = model.texts(cases)
    clauses = []
    for case, text in zip(cases, texts, strict=True):
        parts = text.split(SEPARATOR)
        pairs = (
            list(zip(case.clause_ids, parts, strict=True))
            if len(parts) == len(case.clause_ids)
            else []
        )
        clauses.append(pairs)
    return NarrativeSet(
        event_ids=[c.event_id for c in cases],
        days=[event_day(c.event_time_ms) for c in cases],
        texts=texts,
        clauses=clauses,
        features=model.features(cases),
        typologies=[c.target for c in cases],
    )


def event_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()
