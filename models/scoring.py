"""Scores for analysts: every event of a data directory scored by one registry version, as a
table (``riskstream model score``) to open in a notebook.

    events.jsonl ──► contexts (the dataset's cache, or the real ContextStore on a throwaway
                     Redis namespace, labels applied as they became known)
                 ──► narratives with the *model's own* spec ──► predict_batch
                 ──► event_id, event_time, customer_id, score, typology, alerted, label

The narratives are built with the spec stored with the version (as the scorer builds them),
not with a dataset's freshly fitted one, so the scores are the ones the model would give in
production. ``alerted`` is ``score >= `` the alert threshold stored with the version.
``label`` is the event's resolved label (``models.targets.resolve_labels``; the simulator's
truth when there is a truth file), null when it has none - scores of events whose outcome is
not known yet are written too.

This module is the pure part: ``stream.datasets.score_data`` computes the contexts (the real
ContextStore needs Redis, the streaming side's) and calls :func:`score_table`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
from tqdm.auto import tqdm

from models.dataset import Context, read_truth
from models.errors import ModelError
from models.inference import LoadedModel
from models.targets import resolve_labels
from schemas import LabelEvent, TransactionEvent
from schemas.features import FEATURE_NAMES, select_features
from schemas.narrative import NarrativeSpec, build_narrative, default_spec

_CHUNK = 4096
SUFFIXES = (".parquet", ".csv")


def check_features(model: LoadedModel) -> None:
    """Raise ModelError when a hybrid ``model`` reads features this code does not compute (a
    model of an older features version reads its subset, by name)."""
    if not model.hybrid:
        return
    try:
        select_features(np.zeros((0, len(FEATURE_NAMES)), np.float32), model.feature_names)
    except ValueError as exc:
        raise ModelError(
            f"model {model.version} reads features this version of riskstream does not "
            f"compute ({exc}); retrain it"
        ) from exc


def score_table(
    model: LoadedModel,
    data_dir: Path,
    events: list[TransactionEvent],
    labels: list[LabelEvent],
    contexts: Sequence[Context],
    *,
    progress: bool = True,
) -> pa.Table:
    """The scores table of ``events`` (``data_dir/events.jsonl``) given their contexts, which
    must be computed with counterparty risk at the model's own label maturity (see the module
    docstring)."""
    check_features(model)
    spec = (
        NarrativeSpec.from_json(orjson.dumps(model.narrative_spec))
        if model.narrative_spec
        else default_spec()
    )
    scores: list[float] = []
    typologies: list[str] = []
    for start in tqdm(
        range(0, len(events), _CHUNK), desc="scoring", unit="chunk", disable=not progress
    ):
        built = [
            build_narrative(event, context.features, spec, context.story)
            for event, context in zip(
                events[start : start + _CHUNK], contexts[start : start + _CHUNK], strict=True
            )
        ]
        rows = np.asarray([n.features for n in built], dtype=np.float32)
        predictions = model.predict_batch(
            [n.text for n in built],
            select_features(rows, model.feature_names) if model.hybrid else None,
        )
        scores.extend(float(s) for s in predictions.scores)
        typologies.extend(t.value for t in predictions.typologies)
    truth_path = data_dir / "truth.jsonl"
    if truth_path.is_file():
        known = {k: v.value for k, v in read_truth(truth_path).items()}
    else:
        known = {
            event_id: label.typology.value for event_id, label in resolve_labels(labels).items()
        }
    score_array = np.asarray(scores, dtype=np.float32)
    return pa.table(
        {
            "event_id": [e.event_id for e in events],
            "event_time": pa.array(
                [e.event_time for e in events], type=pa.timestamp("ms", tz="UTC")
            ),
            "customer_id": [e.customer_id for e in events],
            "score": pa.array(score_array, type=pa.float32()),
            "typology": typologies,
            "alerted": pa.array(score_array >= model.alert_threshold, type=pa.bool_()),
            "label": pa.array([known.get(e.event_id) for e in events], type=pa.string()),
        }
    )


def write_scores(table: pa.Table, path: Path) -> None:
    """Parquet or CSV, by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelError(f"{path.name}: write scores to a .parquet or .csv file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
