from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from models.errors import DatasetError
from models.examples import SplitData, sample_legitimate, split_by_day


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
