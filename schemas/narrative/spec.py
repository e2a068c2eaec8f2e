"""`NarrativeSpec`: the narrative template version plus the bucket edges fitted on training data.

A level word ("amount large", "far above this customer's usual") is the bucket of a feature
value between fitted edges. Edges are quantiles of the training features, so a word means the
same share of traffic whatever the currency mix or customer base, and they are stored with the
model: a model trained on one spec must be served with that spec (its ``version``).

Features leveled by fitted edges are listed in ``LEVELED``; thresholds with a meaning of their
own (the reporting threshold, "within the hour", "months of silence") are fixed in the
template instead.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from typing import Final

import numpy as np
import orjson

from schemas.features import FEATURE_NAMES, FEATURE_SETS, FEATURES_VERSION
from schemas.narrative.errors import SpecError

TEMPLATE_VERSION: Final = "n2"
"""The template new specs are fitted for. Bump on any change of clause wording, order or rules:
a model reads one template. Older templates stay readable (``TEMPLATES``) so the models trained
on them keep scoring."""

MIN_ROWS_TO_FIT: Final = 50
"""Fewer applicable rows than this keep the default edges for that feature."""


@dataclass(frozen=True, slots=True)
class Leveled:
    """A feature put into level words by fitted edges."""

    feature: str
    quantiles: tuple[float, ...]
    """Probabilities of the fitted edges: len(quantiles) + 1 levels."""
    applies_to: str | None = None
    """Fit only on rows where this feature is >= ``applies_at`` (e.g. the z-score only where
    the customer has a baseline); None: all rows."""
    applies_at: float = 1.0


LEVELED_N1: Final[tuple[Leveled, ...]] = (
    Leveled("amount_usd", (0.10, 0.30, 0.70, 0.90, 0.98)),
    Leveled("amount_zscore", (0.03, 0.15, 0.85, 0.97, 0.995), "baseline_count", 3.0),
    Leveled("out_sum_1h", (0.50, 0.90, 0.98), "out_count_1h", 2.0),
    Leveled("out_sum_24h", (0.50, 0.90, 0.98), "out_count_24h", 2.0),
    Leveled("cp_customers_7d", (0.50, 0.90, 0.99)),
    Leveled("cp_fraud_rate_30d", (0.50, 0.90), "cp_fraud_labels_30d", 1.0),
)
LEVELED_N2: Final[tuple[Leveled, ...]] = (
    *LEVELED_N1,
    Leveled("cp_mature_rate_7d", (0.50, 0.90), "cp_mature_fraud_7d", 1.0),
    Leveled("cp_mature_rate_30d", (0.50, 0.90), "cp_mature_fraud_30d", 1.0),
)


@dataclass(frozen=True, slots=True)
class Template:
    """What a template version reads: its features version, its fitted levels, and how many
    tokens (with [CLS] and [SEP]) a narrative may take."""

    features_version: str
    leveled: tuple[Leveled, ...]
    max_tokens: int


TEMPLATES: Final[dict[str, Template]] = {
    "n1": Template("f1", LEVELED_N1, 128),
    # n2's length: chosen from measured narrative lengths (BENCHMARKS.md, narrative length)
    "n2": Template("f2", LEVELED_N2, 112),
}
LEVELED: Final = TEMPLATES[TEMPLATE_VERSION].leveled
"""The fitted levels of the current template."""
LEVELED_BY_NAME: Final = {spec.feature: spec for spec in LEVELED}


@dataclass(frozen=True, slots=True)
class NarrativeSpec:
    """Template version + fitted edges (+ the label maturity of the context it was fitted on);
    ``version`` names them all (stored with every model)."""

    edges: Mapping[str, tuple[float, ...]]
    template_version: str = TEMPLATE_VERSION
    features_version: str = FEATURES_VERSION
    fitted_rows: int = 0
    label_maturity_days: int | None = None
    """The context's label maturity the training data was computed with (template n2 on): the
    scorer computes the same for this model. None: the settings' default."""
    version: str = field(init=False)

    def __post_init__(self) -> None:
        template = TEMPLATES.get(self.template_version)
        if template is None:
            raise SpecError(
                f"spec is for narrative template {self.template_version!r}; this code reads "
                f"{', '.join(TEMPLATES)}: refit the spec (and retrain) for {TEMPLATE_VERSION!r}"
            )
        if self.features_version != template.features_version:
            raise SpecError(
                f"spec is for features {self.features_version!r}, but template "
                f"{self.template_version!r} reads {template.features_version!r}"
            )
        for leveled in template.leveled:
            edges = self.edges.get(leveled.feature)
            if edges is None or len(edges) != len(leveled.quantiles):
                raise SpecError(
                    f"spec needs {len(leveled.quantiles)} edges for {leveled.feature!r}, "
                    f"has {0 if edges is None else len(edges)}"
                )
            if any(b <= a for a, b in pairwise(edges)):
                raise SpecError(f"edges of {leveled.feature!r} are not increasing: {edges}")
        content: dict[str, object] = {
            "t": self.template_version,
            "f": self.features_version,
            "e": dict(self.edges),
        }
        if self.label_maturity_days is not None:
            content["m"] = self.label_maturity_days
        digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
        object.__setattr__(
            self, "version", f"{self.template_version}.{self.features_version}-{digest[:10]}"
        )

    @property
    def max_tokens(self) -> int:
        """Tokens a narrative of this template may take, [CLS] and [SEP] included."""
        return TEMPLATES[self.template_version].max_tokens

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The numeric features a hybrid model of this spec reads, in its order."""
        return FEATURE_SETS[self.features_version]

    def level(self, feature: str, value: float) -> int:
        """0 .. len(edges): how many edges ``value`` is at or above."""
        return bisect_right(self.edges[feature], value)

    def to_json(self) -> str:
        data: dict[str, object] = {
            "version": self.version,
            "template_version": self.template_version,
            "features_version": self.features_version,
            "fitted_rows": self.fitted_rows,
            "edges": {name: list(values) for name, values in self.edges.items()},
        }
        if self.label_maturity_days is not None:
            data["label_maturity_days"] = self.label_maturity_days
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> NarrativeSpec:
        try:
            data = orjson.loads(text)
            spec = cls(
                edges={str(k): tuple(float(x) for x in v) for k, v in data["edges"].items()},
                template_version=str(data["template_version"]),
                features_version=str(data["features_version"]),
                fitted_rows=int(data.get("fitted_rows", 0)),
                label_maturity_days=(
                    None
                    if data.get("label_maturity_days") is None
                    else int(data["label_maturity_days"])
                ),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"not a narrative spec: {exc}") from exc
        if "version" in data and data["version"] != spec.version:
            raise SpecError(
                f"spec says version {data['version']!r} but its contents hash to {spec.version!r}"
            )
        return spec


@lru_cache(maxsize=1)
def default_spec() -> NarrativeSpec:
    """Edges for use before any training (hand-set, see docs/narratives.md); shipped as
    ``schemas/narrative/default_spec.json``."""
    text = (resources.files("schemas.narrative") / "default_spec.json").read_bytes()
    return NarrativeSpec.from_json(text)


def fit_spec(
    feature_rows: Iterable[Sequence[float]], *, label_maturity_days: int | None = None
) -> NarrativeSpec:
    """Edges of the current template at the ``LEVELED`` quantiles of ``feature_rows`` (vectors
    in FEATURE_NAMES order, e.g. ``Narrative.features`` of the training events). Fit on
    training data only."""
    rows = np.asarray(list(feature_rows), dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(FEATURE_NAMES):
        raise SpecError(
            f"feature rows must be (n, {len(FEATURE_NAMES)}) in FEATURE_NAMES order, "
            f"got shape {rows.shape}"
        )
    fallback = default_spec().edges
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    edges: dict[str, tuple[float, ...]] = {}
    for leveled in LEVELED:
        values = rows[:, index[leveled.feature]]
        if leveled.applies_to is not None:
            values = values[rows[:, index[leveled.applies_to]] >= leveled.applies_at]
        fitted = _strictly_increasing(
            np.quantile(values, leveled.quantiles) if len(values) >= MIN_ROWS_TO_FIT else None
        )
        edges[leveled.feature] = fitted or fallback[leveled.feature]
    return NarrativeSpec(
        edges=edges, fitted_rows=len(rows), label_maturity_days=label_maturity_days
    )


def _strictly_increasing(quantiles: np.ndarray | None) -> tuple[float, ...] | None:
    """Quantiles as edges, or None when ties make them unusable (e.g. a mostly-zero feature):
    a level that no value can reach would make the words lie about the data."""
    if quantiles is None:
        return None
    edges = tuple(float(np.float32(q)) for q in quantiles)
    if any(b <= a for a, b in pairwise(edges)):
        return None
    return edges
