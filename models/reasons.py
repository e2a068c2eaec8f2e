"""Why an event was alerted: the narrative clauses that drove its score, by clause occlusion.

For each alerted narrative, every clause is hidden in turn and the narrative rescored; a
clause's weight is how far the risk score fell without it. All variants of all alerts go
through the model in one ``predict_batch`` call (length bucketing keeps the padding small), so
explaining k alerts of c clauses costs one batch of k × c narratives (k × (c + 1) when the
caller does not pass the alerts' own scores), plus k figures-aside variants for a hybrid —
cheap enough for the alerts only, never for every event.

Occlusion was chosen over gradient × input because it explains in the unit a person reads (a
clause, not a word piece), needs no gradients (it runs on the same quantised inference model as
scoring), and its weight has a plain meaning: "the score drops by this much without it".

For a hybrid model the numeric features stay as they are while a clause is hidden, so a
weight measures what the *words* added on top of the features. When no clause lowers the
score on its own - the evidence sits in the figures, or several clauses say the same thing -
one more variant sets the figures aside (the features at the training average, the full
text kept) and, if the score falls, the alert's reason is :data:`FIGURES_REASON` with that
drop: an alert always says why, and never with a weight it did not measure.

**Descriptive clauses are never reasons.** Some clauses only say what the event is - its type
("inbound wire"), and any clause id in :data:`DESCRIPTIVE_CLAUSES` - not what is unusual about
it. Hiding one leaves a narrative the model never saw (every narrative starts with its event
type), so its occlusion drop measures how lost the model is without it, not evidence - yet it
was reported as a reason, even the first, ahead of "high-risk country, never used before".
They stay in every variant and are not ranked; the decision is in docs/models.md, the figures
in BENCHMARKS.md ("Alert reasons").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from models.inference import LoadedModel
from schemas import Reason
from schemas.narrative.builder import SEPARATOR

DESCRIPTIVE_CLAUSES: frozenset[str] = frozenset({"event"})
"""Clause ids that describe the event rather than give evidence about it (see the module doc);
a narrative template that adds such a clause adds its id here."""

FIGURES_REASON = "context_figures"
"""Clause id of the reason given when only the numeric context explains a hybrid score."""
FIGURES_REASON_TEXT = "the customer's and counterparty's context figures taken together"

_REASON_TEXT_LIMIT = 512
_CLAUSE_ID_LIMIT = 64


class Clause(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...


class ExplainableNarrative(Protocol):
    """What reasons need from a narrative (``schemas.narrative.Narrative`` satisfies it)."""

    @property
    def text(self) -> str: ...
    @property
    def clauses(self) -> Sequence[Clause]: ...


RemoveClause = Callable[[ExplainableNarrative, str], str]


def remove_clause_text(narrative: ExplainableNarrative, clause_id: str) -> str:
    """The other clauses joined as the narrative builder joins them — for a
    ``schemas.narrative.Narrative`` exactly what ``narrative_without`` returns."""
    return SEPARATOR.join(c.text for c in narrative.clauses if c.id != clause_id)


def explain(
    model: LoadedModel,
    narratives: Sequence[ExplainableNarrative],
    features: NDArray[np.floating] | None = None,
    *,
    top_k: int = 3,
    remove_clause: RemoveClause = remove_clause_text,
    descriptive: Collection[str] = DESCRIPTIVE_CLAUSES,
    scores: Sequence[float] | None = None,
) -> list[list[Reason]]:
    """Up to ``top_k`` reasons per narrative (those whose removal lowered the score), largest
    score drop first; clauses whose id is in ``descriptive`` are kept in every variant and
    never ranked. Call it for alerted events only. ``scores``: the narratives' own scores when
    the caller has them (the scorer does: it alerted on them) - the drops are then measured
    from the score the alert carries, and the full texts are not scored a second time (one
    model input fewer per alert)."""
    if scores is not None and len(scores) != len(narratives):
        raise ValueError(f"{len(scores)} scores for {len(narratives)} narratives")
    texts: list[str] = []
    owners: list[int] = []
    clause_refs: list[tuple[int, Clause]] = []
    for index, narrative in enumerate(narratives):
        if scores is None:
            texts.append(narrative.text)
            owners.append(index)
        for clause in narrative.clauses:
            if clause.id in descriptive:
                continue
            texts.append(remove_clause(narrative, clause.id))
            owners.append(index)
            clause_refs.append((index, clause))
    variant_features = None
    hybrid = model.hybrid and features is not None
    if hybrid:
        variant_features = np.asarray(features, dtype=np.float32)[owners]
        # the figures-aside variants: each full text with the features at their average
        variant_features = np.concatenate(
            [variant_features, np.tile(model.neutral_features(), (len(narratives), 1))]
        )
        texts = texts + [n.text for n in narratives]
    variant_scores = model.predict_batch(texts, variant_features).scores
    figures_aside = variant_scores[len(owners) :]

    full_score: dict[int, float] = (
        {} if scores is None else {i: float(score) for i, score in enumerate(scores)}
    )
    drops: list[list[tuple[float, Clause]]] = [[] for _ in narratives]
    clause_iter = iter(clause_refs)
    for position, owner in enumerate(owners):
        if owner not in full_score:  # the full text, scored here (no ``scores`` given)
            full_score[owner] = float(variant_scores[position])
            continue
        _, clause = next(clause_iter)
        drops[owner].append((full_score[owner] - float(variant_scores[position]), clause))

    reasons: list[list[Reason]] = []
    for owner, candidates in enumerate(drops):
        candidates.sort(key=lambda pair: pair[0], reverse=True)
        found = [
            Reason(
                clause=clause.id[:_CLAUSE_ID_LIMIT],
                text=clause.text[:_REASON_TEXT_LIMIT],
                weight=round(drop, 6),
            )
            for drop, clause in candidates[:top_k]
            if round(drop, 6) > 0.0
        ]
        if not found and hybrid:
            drop = round(full_score[owner] - float(figures_aside[owner]), 6)
            if drop > 0.0:
                found = [Reason(clause=FIGURES_REASON, text=FIGURES_REASON_TEXT, weight=drop)]
        reasons.append(found)
    return reasons
