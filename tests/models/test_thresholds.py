import numpy as np
import pytest

from models.errors import ModelError
from models.thresholds import calibrate, threshold_for_alert_rate, threshold_for_precision


def test_alert_rate_threshold_alerts_on_that_share() -> None:
    scores = np.random.default_rng(0).random(10_000)
    threshold = threshold_for_alert_rate(scores, 0.02)
    assert np.mean(scores >= threshold) == pytest.approx(0.02, abs=1e-4)


def test_alert_rate_threshold_never_overshoots_on_ties() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    threshold = threshold_for_alert_rate(scores, 0.2)  # capacity: 2 alerts
    assert np.sum(scores >= threshold) <= 2
    assert np.sum(scores >= threshold) >= 1


def test_precision_threshold_reaches_the_target_with_most_recall() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(5000) < 0.1
    scores = np.clip(rng.normal(0.3, 0.15, 5000) + labels * 0.3, 0, 1)
    threshold = threshold_for_precision(scores, labels, 0.8)
    alerted = scores >= threshold
    assert labels[alerted].mean() >= 0.8
    # one step lower (the next distinct score below) must fall under the target
    lower = np.max(scores[scores < threshold])
    assert labels[scores >= lower].mean() < 0.8


def test_calibrate_reports_both_operating_points() -> None:
    labels = np.arange(1000) >= 950
    scores = np.linspace(0, 1, 1000)
    thresholds = calibrate(scores, labels, target="precision", alert_rate=0.1, precision=0.9)
    assert thresholds.at_alert_rate.alert_rate == pytest.approx(0.1, abs=1e-3)
    assert thresholds.at_precision.precision >= 0.9
    assert thresholds.alert_threshold == thresholds.at_precision.threshold
    with pytest.raises(ModelError):
        calibrate(scores[:0], labels[:0])
