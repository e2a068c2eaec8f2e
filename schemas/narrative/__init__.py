"""Transaction narratives: the event and its context as short worded text for the model.

``build_narrative(event, features, spec, story)`` is pure and takes plain values (a caller
holding a ``stream.context`` EventContext passes its ``features`` and ``story``);
``NarrativeSpec`` holds the template version and the bucket edges fitted on training data
(``fit_spec``; ``default_spec()`` before any training). See docs/narratives.md.
"""

from schemas.features import FEATURE_NAMES, FEATURES_VERSION
from schemas.narrative.builder import (
    CLAUSE_ORDER,
    Clause,
    Narrative,
    build_narrative,
    narrative_without,
)
from schemas.narrative.errors import NarrativeError, SpecError
from schemas.narrative.spec import TEMPLATE_VERSION, NarrativeSpec, default_spec, fit_spec
from schemas.narrative.tokens import MAX_TOKENS

__all__ = [
    "CLAUSE_ORDER",
    "FEATURES_VERSION",
    "FEATURE_NAMES",
    "MAX_TOKENS",
    "TEMPLATE_VERSION",
    "Clause",
    "Narrative",
    "NarrativeError",
    "NarrativeSpec",
    "SpecError",
    "build_narrative",
    "default_spec",
    "fit_spec",
    "narrative_without",
]
