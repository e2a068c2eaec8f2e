"""Drift between a model's reference traffic and recent traffic, as population stability
indices (PSI). Pure: arrays in, numbers out.

    PSI = Σ_bins (p_recent − p_reference) · ln(p_recent / p_reference)

Rules of thumb: below 0.1 nothing moved, 0.1-0.25 something moved, above 0.25 the model sees a
population it was not trained on. Measured for

* every context feature (bins at the reference's deciles; features with few distinct values -
  flags, codes - get one bin per value),
* clause ids (how often each clause appears: the narrative's structure),
* narrative tokens (the reference's most frequent words plus an "other" bucket),
* scores (bins at the reference's score deciles): score drift with stable inputs points at
  the model, with moving inputs at the traffic.

:func:`reference_stats` summarises a sample at training time (stored with the model as
``reference_stats.json``); :func:`drift_report` compares a recent sample with it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

BINS: Final = 10
TOP_TOKENS: Final = 300
OTHER: Final = "<other>"
# Empty bins would make PSI infinite; a floor keeps one unseen value from dominating.
_FLOOR: Final = 1e-4
_WORD = re.compile(r"[a-z]+")


def psi(reference: Sequence[float], recent: Sequence[float]) -> float:
    """PSI of two distributions over the same bins (each sums to 1, or is all zeros)."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), _FLOOR)
    q = np.maximum(np.asarray(recent, dtype=np.float64), _FLOOR)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_bins(values: NDArray[np.floating]) -> list[float]:
    """Cut points: the distinct values when there are at most ``BINS`` of them (one bin each),
    else the distinct deciles."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return []
    distinct = np.unique(values)
    if len(distinct) <= BINS:
        return [float(v) for v in distinct[1:]]
    cuts = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    return [float(c) for c in cuts]


def bin_shares(values: NDArray[np.floating], edges: Sequence[float]) -> list[float]:
    """Share of ``values`` in each of the ``len(edges) + 1`` bins (a value equal to an edge
    falls in the bin above it)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [0.0] * (len(edges) + 1)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [float(c) for c in counts / len(values)]


def category_shares(counts: Counter[str], categories: Sequence[str]) -> list[float]:
    """Shares of ``categories`` (plus a last "other" bucket for everything else)."""
    total = sum(counts.values())
    if total == 0:
        return [0.0] * (len(categories) + 1)
    known = [counts.get(c, 0) / total for c in categories]
    return [*known, max(0.0, 1.0 - sum(known))]


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def reference_stats(
    features: NDArray[np.floating],
    feature_names: Sequence[str],
    clause_ids: Iterable[Sequence[str]],
    texts: Iterable[str],
    scores: NDArray[np.floating] | None,
    *,
    model_version: str | None = None,
) -> dict[str, Any]:
    """The distributions a later sample is compared with (JSON-ready)."""
    features = np.asarray(features, dtype=np.float64)
    feature_stats = {}
    for i, name in enumerate(feature_names):
        edges = numeric_bins(features[:, i])
        feature_stats[name] = {"edges": edges, "shares": bin_shares(features[:, i], edges)}
    clause_counts = Counter(c for ids in clause_ids for c in ids)
    clauses = sorted(clause_counts)
    token_counts = Counter(t for text in texts for t in tokens(text))
    top = sorted(t for t, _ in token_counts.most_common(TOP_TOKENS))
    stats: dict[str, Any] = {
        "rows": len(features),
        "features": feature_stats,
        "clauses": {"ids": clauses, "shares": category_shares(clause_counts, clauses)},
        "tokens": {"ids": top, "shares": category_shares(token_counts, top)},
        "scores": None,
        "score_model": model_version,
    }
    if scores is not None and len(scores):
        edges = numeric_bins(np.asarray(scores))
        stats["scores"] = {"edges": edges, "shares": bin_shares(np.asarray(scores), edges)}
    return stats


@dataclass
class DriftReport:
    rows: int
    feature_psi: dict[str, float] = field(default_factory=dict)
    clause_psi: float = math.nan
    token_psi: float = math.nan
    score_psi: float = math.nan
    """NaN when the reference has no scores or no recent score came from its model."""

    @property
    def max_feature_psi(self) -> float:
        return max(self.feature_psi.values(), default=math.nan)

    def top_features(self, n: int = 5) -> list[tuple[str, float]]:
        return sorted(self.feature_psi.items(), key=lambda kv: -kv[1])[:n]


def drift_report(
    reference: dict[str, Any],
    features: NDArray[np.floating],
    feature_names: Sequence[str],
    clause_ids: Iterable[Sequence[str]],
    texts: Iterable[str],
    scores: NDArray[np.floating] | None,
) -> DriftReport:
    """PSI of the recent sample against ``reference`` (from :func:`reference_stats`)."""
    features = np.asarray(features, dtype=np.float64)
    report = DriftReport(rows=len(features))
    if len(features) == 0:
        return report
    for i, name in enumerate(feature_names):
        ref = reference["features"].get(name)
        if ref is not None:
            recent = bin_shares(features[:, i], ref["edges"])
            report.feature_psi[name] = psi(ref["shares"], recent)
    clause_counts = Counter(c for ids in clause_ids for c in ids)
    ref_clauses = reference["clauses"]
    report.clause_psi = psi(
        ref_clauses["shares"], category_shares(clause_counts, ref_clauses["ids"])
    )
    token_counts = Counter(t for text in texts for t in tokens(text))
    ref_tokens = reference["tokens"]
    report.token_psi = psi(ref_tokens["shares"], category_shares(token_counts, ref_tokens["ids"]))
    ref_scores = reference.get("scores")
    if ref_scores is not None and scores is not None and len(scores):
        report.score_psi = psi(
            ref_scores["shares"], bin_shares(np.asarray(scores), ref_scores["edges"])
        )
    return report
