"""Labelled narratives in memory and on disk: what training, evaluation and the GBDT baseline
read, whatever produced them (the simulator pipeline in ``models.dataset``, or a test).

A :class:`NarrativeSet` is column-oriented (parallel arrays), which is what batching, metrics
and Parquet all want. :class:`SplitData` is the time-based split: train on earlier days,
validate and test on later ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from models.errors import DatasetError
from schemas import Typology

SPLITS = ("train", "validation", "test")


@dataclass
class NarrativeSet:
    """Parallel columns, one row per event."""

    event_ids: list[str]
    days: list[date]
    texts: list[str]
    clauses: list[list[tuple[str, str]]]
    """(clause id, clause text) per narrative, for reasons and occlusion tests."""
    features: NDArray[np.float32]
    """(n, len(feature_names)) numeric context features behind the narrative."""
    typologies: list[Typology]
    weights: NDArray[np.float64] | None = None
    """How many events of the population each row stands for (a subsample weighted back);
    None: every row is one event."""

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> NDArray[np.bool_]:
        return np.array([t is not Typology.LEGITIMATE for t in self.typologies], dtype=bool)

    def subset(self, rows: NDArray[np.integer] | list[int]) -> NarrativeSet:
        rows = list(map(int, rows))
        return NarrativeSet(
            event_ids=[self.event_ids[r] for r in rows],
            days=[self.days[r] for r in rows],
            texts=[self.texts[r] for r in rows],
            clauses=[self.clauses[r] for r in rows],
            features=self.features[rows],
            typologies=[self.typologies[r] for r in rows],
            weights=None if self.weights is None else self.weights[rows],
        )

    def row_weights(self) -> NDArray[np.float64]:
        return np.ones(len(self)) if self.weights is None else self.weights

    def sample_legitimate(self, rate: float, rng: np.random.Generator) -> NarrativeSet:
        """All suspicious rows and a ``rate`` share of legitimate ones, weighted back (see
        :func:`sample_legitimate`); the set itself when ``rate`` is 1."""
        if rate >= 1.0:
            return self
        rows, weights = sample_legitimate(self.labels, rate, rng)
        sampled = self.subset(rows)
        sampled.weights = sampled.row_weights() * weights
        return sampled

    def day_range(self) -> tuple[str, str]:
        if not self.days:
            return ("", "")
        return (min(self.days).isoformat(), max(self.days).isoformat())


@dataclass
class SplitData:
    """A time-based split plus what was fitted on its train part."""

    train: NarrativeSet
    validation: NarrativeSet
    test: NarrativeSet
    feature_names: tuple[str, ...]
    narrative_spec: dict[str, Any] = field(default_factory=dict)
    """The NarrativeSpec (JSON) fitted on the train split; stored with every model."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How the split was made: the target source (truth or labels, with the clock, the
    maturity and what it left out) and the split rule (fractions or dates, gap)."""

    @property
    def narrative_version(self) -> str:
        return str(self.narrative_spec.get("version", "unknown"))

    def data_window(self) -> dict[str, tuple[str, str]]:
        return {name: getattr(self, name).day_range() for name in SPLITS}

    def save(self, directory: Path) -> None:
        """One Parquet file per split plus ``meta.json`` (feature names, narrative spec)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            write_narrative_set(getattr(self, name), directory / f"{name}.parquet")
        meta = {
            "feature_names": list(self.feature_names),
            "narrative_spec": self.narrative_spec,
            "provenance": self.provenance,
        }
        (directory / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, directory: Path) -> SplitData:
        try:
            meta = orjson.loads((directory / "meta.json").read_bytes())
            parts = {name: read_narrative_set(directory / f"{name}.parquet") for name in SPLITS}
        except (OSError, orjson.JSONDecodeError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot read a cached dataset from {directory}: {exc}") from exc
        return cls(
            **parts,
            feature_names=tuple(meta["feature_names"]),
            narrative_spec=meta.get("narrative_spec", {}),
            provenance=meta.get("provenance", {}),
        )


def write_narrative_set(part: NarrativeSet, path: Path) -> None:
    """One Parquet file (row weights are not stored: a written set is a set of examples)."""
    table = pa.table(
        {
            "event_id": part.event_ids,
            "day": pa.array(part.days, type=pa.date32()),
            "text": part.texts,
            "clauses": [orjson.dumps(c).decode() for c in part.clauses],
            "features": pa.array(
                list(part.features.astype(np.float32)), type=pa.list_(pa.float32())
            ),
            "typology": [t.value for t in part.typologies],
        }
    )
    pq.write_table(table, path)


def read_narrative_set(path: Path) -> NarrativeSet:
    """A set written by :func:`write_narrative_set` (pyarrow raises on a damaged file)."""
    table = pq.read_table(path).to_pydict()
    width_rows = [np.asarray(row, dtype=np.float32) for row in table["features"]]
    features = np.stack(width_rows) if width_rows else np.zeros((0, 0), np.float32)
    return NarrativeSet(
        event_ids=table["event_id"],
        days=table["day"],
        texts=table["text"],
        clauses=[[tuple(pair) for pair in orjson.loads(c)] for c in table["clauses"]],
        features=features,
        typologies=[Typology(t) for t in table["typology"]],
    )


def concat(parts: Sequence[NarrativeSet]) -> NarrativeSet:
    """The rows of ``parts`` in order (row weights kept; 1 where a part has none)."""
    weighted = any(p.weights is not None for p in parts)
    widths = {p.features.shape[1] for p in parts if len(p)}
    if len(widths) > 1:
        raise DatasetError(f"cannot concatenate narrative sets of feature widths {sorted(widths)}")
    width = widths.pop() if widths else 0
    return NarrativeSet(
        event_ids=[e for p in parts for e in p.event_ids],
        days=[d for p in parts for d in p.days],
        texts=[t for p in parts for t in p.texts],
        clauses=[c for p in parts for c in p.clauses],
        features=np.concatenate(
            [p.features.reshape(len(p), width) for p in parts] or [np.zeros((0, 0), np.float32)]
        ).astype(np.float32),
        typologies=[t for p in parts for t in p.typologies],
        weights=np.concatenate([p.row_weights() for p in parts]) if weighted else None,
    )


def training_sample(
    part: NarrativeSet, max_suspicious: int, max_legitimate: int, seed: int
) -> NarrativeSet:
    """A bounded sample of ``part`` kept with a model so that fine-tunes of it can replay what
    it learned from (a fine-tune on recent cases alone forgets typologies absent from them):
    the latest ``max_suspicious`` suspicious rows (all, usually) and ``max_legitimate``
    legitimate rows drawn at random, in their original order, unweighted."""
    labels = part.labels
    suspicious = np.flatnonzero(labels)[-max_suspicious:] if max_suspicious else np.zeros(0, int)
    legitimate = np.flatnonzero(~labels)
    if len(legitimate) > max_legitimate:
        rng = np.random.default_rng(seed)
        legitimate = rng.choice(legitimate, size=max_legitimate, replace=False)
    rows = np.sort(np.concatenate([suspicious, legitimate]).astype(np.int64))
    sample = part.subset(rows)
    sample.weights = None
    return sample


def split_by_day(
    days: list[date], fractions: tuple[float, float] = (0.6, 0.2), *, gap_days: int = 0
) -> dict[str, NDArray[np.int64]]:
    """Row indices of each split: the first ``fractions[0]`` of the *days* train, the next
    ``fractions[1]`` validate, the rest test. Splitting by day, never by row at random, so a
    model is always judged on days after everything it learned from — as in production, and
    without one scenario's events leaking across the split boundary within a day.

    ``gap_days`` leaves that many days out after each boundary (see :func:`split_by_dates`)."""
    distinct = sorted(set(days))
    if len(distinct) < 3:
        raise DatasetError(
            f"a time-based split needs at least 3 distinct days, got {len(distinct)}"
        )
    n_train = max(1, round(len(distinct) * fractions[0]))
    n_valid = max(1, round(len(distinct) * fractions[1]))
    n_train = min(n_train, len(distinct) - 2)
    n_valid = min(n_valid, len(distinct) - n_train - 1)
    train_end, valid_end = distinct[n_train - 1], distinct[n_train + n_valid - 1]
    one = timedelta(days=1)
    return split_by_dates(days, train_end + one, valid_end + one, gap_days=gap_days)


def split_by_dates(
    days: list[date],
    train_until: date,
    validate_until: date,
    test_until: date | None = None,
    *,
    gap_days: int = 0,
) -> dict[str, NDArray[np.int64]]:
    """Row indices of each split by explicit dates, each range half-open:

        train       day <  train_until
        validation  train_until + gap    <= day < validate_until
        test        validate_until + gap <= day < test_until (default: every later day)

    A gap of a few days between the parts keeps a scenario that straddles a boundary (a
    mule network's fan-out over several days, a card tested one day and drained the next)
    from being partly learned and partly judged."""
    if gap_days < 0:
        raise DatasetError(f"the gap must not be negative, got {gap_days} days")
    if not train_until < validate_until:
        raise DatasetError(
            f"train-until {train_until} must come before validate-until {validate_until}"
        )
    if test_until is not None and not validate_until < test_until:
        raise DatasetError(
            f"validate-until {validate_until} must come before test-until {test_until}"
        )
    gap = timedelta(days=gap_days)
    day_array = np.array(days, dtype="datetime64[D]")
    bounds = {
        "train": (None, train_until),
        "validation": (train_until + gap, validate_until),
        "test": (validate_until + gap, test_until),
    }
    parts: dict[str, NDArray[np.int64]] = {}
    for name, (start, end) in bounds.items():
        keep = np.ones(len(days), dtype=bool)
        if start is not None:
            keep &= day_array >= np.datetime64(start, "D")
        if end is not None:
            keep &= day_array < np.datetime64(end, "D")
        parts[name] = np.flatnonzero(keep)
    return parts


def sample_legitimate(
    labels: NDArray[np.bool_], rate: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """All suspicious rows plus a ``rate`` share of legitimate ones, with weights 1 / rate on
    the kept legitimate rows so weighted statistics (loss, average precision) stay those of
    the full set."""
    if not 0.0 < rate <= 1.0:
        raise DatasetError(f"legitimate sample rate must be in (0, 1], got {rate}")
    keep = labels | (rng.random(len(labels)) < rate)
    rows = np.flatnonzero(keep)
    weights = np.where(labels[rows], 1.0, 1.0 / rate).astype(np.float32)
    return rows, weights
