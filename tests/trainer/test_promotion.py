"""The promotion decision and the holdout metrics it reads."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from stream.trainer.promotion import HoldoutMetrics, decide, holdout_metrics


def metrics(ap: float, precision: float, *, auc: float = 0.9) -> HoldoutMetrics:
    return HoldoutMetrics(
        cases=200,
        suspicious=20,
        average_precision=ap,
        roc_auc=auc,
        alert_threshold=0.5,
        alerted=10,
        precision_at_threshold=precision,
        recall_at_threshold=0.4,
    )


def test_holdout_metrics_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    labels = np.array([True, False, True, True, False, False])
    m = holdout_metrics(scores, labels, threshold=0.7)
    assert (m.cases, m.suspicious, m.alerted) == (6, 3, 3)
    assert m.precision_at_threshold == pytest.approx(2 / 3)
    assert m.recall_at_threshold == pytest.approx(2 / 3)
    # AP: positives at ranks 1, 3, 4 -> (1/1 + 2/3 + 3/4) / 3
    assert m.average_precision == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m.roc_auc == pytest.approx(7 / 9)  # 7 of the 9 (pos, neg) pairs ordered right

    nothing = holdout_metrics(scores, labels, threshold=0.95)
    assert nothing.alerted == 0
    assert nothing.precision_at_threshold == 0.0
    one_class = holdout_metrics(scores, np.zeros(6, dtype=bool), threshold=0.5)
    assert math.isnan(one_class.average_precision)


def test_a_better_challenger_within_the_precision_bound_is_promoted() -> None:
    decision = decide(
        metrics(0.60, 0.80),
        metrics(0.70, 0.79),
        metric="average_precision",
        max_precision_loss=0.02,
    )
    assert decision.promote
    assert "0.7000 > 0.6000" in decision.reason


def test_a_challenger_that_is_not_better_is_rejected() -> None:
    for challenger_ap in (0.60, 0.55):
        decision = decide(
            metrics(0.60, 0.80),
            metrics(challenger_ap, 0.95),
            metric="average_precision",
            max_precision_loss=0.02,
        )
        assert not decision.promote
        assert "not better" in decision.reason


def test_min_improvement_raises_the_bar() -> None:
    champion, challenger = metrics(0.60, 0.8), metrics(0.605, 0.8)
    assert decide(champion, challenger, metric="average_precision", max_precision_loss=0.0).promote
    decision = decide(
        champion,
        challenger,
        metric="average_precision",
        max_precision_loss=0.0,
        min_improvement=0.01,
    )
    assert not decision.promote
    assert "by more than 0.01" in decision.reason


def test_losing_too_much_precision_at_the_alert_threshold_rejects_a_better_ranker() -> None:
    decision = decide(
        metrics(0.60, 0.80),
        metrics(0.75, 0.77),
        metric="average_precision",
        max_precision_loss=0.02,
    )
    assert not decision.promote
    assert "precision at its alert threshold 0.7700" in decision.reason
    # exactly at the bound is allowed
    assert decide(
        metrics(0.60, 0.80),
        metrics(0.75, 0.78),
        metric="average_precision",
        max_precision_loss=0.02,
    ).promote


def test_the_configured_metric_is_the_one_compared() -> None:
    champion, challenger = metrics(0.60, 0.8, auc=0.95), metrics(0.70, 0.8, auc=0.90)
    assert decide(champion, challenger, metric="average_precision", max_precision_loss=0).promote
    assert not decide(champion, challenger, metric="roc_auc", max_precision_loss=0).promote


def test_undefined_or_mismatched_holdouts_reject() -> None:
    nan = metrics(math.nan, 0.5)
    assert not decide(
        nan, metrics(0.9, 0.9), metric="average_precision", max_precision_loss=1
    ).promote
    other_holdout = replace(metrics(0.9, 0.9), cases=150)
    decision = decide(
        metrics(0.1, 0.1), other_holdout, metric="average_precision", max_precision_loss=1
    )
    assert not decision.promote
    assert "same holdout" in decision.reason
