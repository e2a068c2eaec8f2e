from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from models.errors import DatasetError
from models.examples import SplitData, concat, sample_legitimate, split_by_day, training_sample


def test_split_is_by_day_and_in_time_order() -> None:
    days = [date(2025, 1, 1) + timedelta(days=i % 10) for i in range(1000)]
    parts = split_by_day(days, (0.6, 0.2))
    assert sum(len(p) for p in parts.values()) == len(days)
    day = np.array(days)
    assert day[parts["train"]].max() < day[parts["validation"]].min()
    assert day[parts["validation"]].max() < day[parts["test"]].min()
    assert len(set(day[parts["train"]])) == 6
    with pytest.raises(DatasetError):
        split_by_day([date(2025, 1, 1)] * 5)


def test_legitimate_sampling_keeps_weighted_totals() -> None:
    labels = np.random.default_rng(0).random(20_000) < 0.02
    rows, weights = sample_legitimate(labels, 0.1, np.random.default_rng(1))
    assert labels[rows].sum() == labels.sum()
    assert weights[~labels[rows]].sum() == pytest.approx((~labels).sum(), rel=0.05)


def test_parquet_round_trip(tmp_path: Path, synthetic_split: SplitData) -> None:
    synthetic_split.save(tmp_path)
    loaded = SplitData.load(tmp_path)
    assert loaded.feature_names == synthetic_split.feature_names
    assert loaded.narrative_version == "test-1"
    assert loaded.test.texts == synthetic_split.test.texts
    assert loaded.test.typologies == synthetic_split.test.typologies
    assert loaded.test.days == synthetic_split.test.days
    assert loaded.train.clauses[0] == synthetic_split.train.clauses[0]
    np.testing.assert_array_equal(loaded.validation.features, synthetic_split.validation.features)


def test_training_sample_keeps_the_suspicious_rows_and_bounds_the_rest(
    synthetic_split: SplitData,
) -> None:
    part = synthetic_split.train
    suspicious = int(part.labels.sum())
    sample = training_sample(part, max_suspicious=10_000, max_legitimate=50, seed=0)
    assert int(sample.labels.sum()) == suspicious
    assert len(sample) == suspicious + 50
    assert sample.weights is None
    assert sample.days == sorted(sample.days)  # original order kept
    assert set(sample.event_ids) <= set(part.event_ids)
    fewer = training_sample(part, max_suspicious=3, max_legitimate=0, seed=0)
    latest = [e for e, s in zip(part.event_ids, part.labels, strict=True) if s][-3:]
    assert fewer.event_ids == latest


def test_concat_keeps_rows_and_weights_in_order(synthetic_split: SplitData) -> None:
    a = synthetic_split.train.subset([0, 1, 2])
    b = synthetic_split.validation.sample_legitimate(0.5, np.random.default_rng(0))
    both = concat([a, b])
    assert both.event_ids == a.event_ids + b.event_ids
    np.testing.assert_array_equal(both.features, np.concatenate([a.features, b.features]))
    assert both.weights is not None
    np.testing.assert_array_equal(both.weights, np.concatenate([np.ones(3), b.row_weights()]))
    narrow = synthetic_split.train.subset([0])
    narrow.features = narrow.features[:, :2]
    with pytest.raises(DatasetError, match="feature widths"):
        concat([a, narrow])
