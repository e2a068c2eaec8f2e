from pathlib import Path

import numpy as np
import pytest

from models.evaluate import evaluate, recall_at_precision, write_plots
from schemas import Typology


def _truth(n: int, seed: int) -> list[Typology]:
    rng = np.random.default_rng(seed)
    choices = [Typology.STRUCTURING, Typology.CARD_TESTING]
    return [
        choices[int(rng.integers(2))] if rng.random() < 0.05 else Typology.LEGITIMATE
        for _ in range(n)
    ]


def test_metrics_separate_a_ranking_model_from_a_random_one() -> None:
    truth = _truth(4000, 0)
    labels = np.array([t is not Typology.LEGITIMATE for t in truth])
    rng = np.random.default_rng(1)
    good = np.clip(rng.normal(0.2, 0.1, len(truth)) + labels * 0.5, 0, 1)
    random_scores = rng.random(len(truth))
    good_report = evaluate(good, truth, alert_budget=0.05)
    random_report = evaluate(random_scores, truth, alert_budget=0.05)
    assert good_report.average_precision > 0.9
    assert random_report.average_precision == pytest.approx(labels.mean(), abs=0.03)
    assert good_report.recall_at_budget > 0.8 > random_report.recall_at_budget
    assert set(good_report.per_typology_recall) == {"structuring", "card_testing"}
    assert good_report.roc_auc > 0.95
    assert 0.4 < random_report.roc_auc < 0.6


def test_per_typology_recall_shows_a_missed_typology() -> None:
    truth = _truth(3000, 2)
    scores = np.array([0.9 if t is Typology.STRUCTURING else 0.1 for t in truth])
    report = evaluate(scores, truth, alert_budget=0.05)
    assert report.per_typology_recall["structuring"] == 1.0
    assert report.per_typology_recall["card_testing"] == 0.0


def test_recall_at_precision() -> None:
    labels = np.array([True, True, False, True, False, False])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert recall_at_precision(scores, labels, 1.0) == pytest.approx(2 / 3)
    assert recall_at_precision(scores, labels, 0.75) == pytest.approx(1.0)


def test_plots_are_png_files(tmp_path: Path) -> None:
    truth = _truth(500, 3)
    scores = np.random.default_rng(4).random(500)
    paths = write_plots(scores, truth, tmp_path, title="test", threshold=0.5)
    assert [p.name for p in paths] == ["pr_curve.png", "score_histogram.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weighted_subsample_estimates_the_full_population() -> None:
    truth = _truth(20_000, 5)
    labels = np.array([t is not Typology.LEGITIMATE for t in truth])
    rng = np.random.default_rng(6)
    scores = np.clip(rng.normal(0.3, 0.15, len(truth)) + labels * 0.25, 0, 1)
    full = evaluate(scores, truth, alert_budget=0.02)
    keep = labels | (rng.random(len(truth)) < 0.2)
    weights = np.where(labels, 1.0, 5.0)[keep]
    sub_truth = [t for t, k in zip(truth, keep, strict=True) if k]
    estimate = evaluate(scores[keep], sub_truth, alert_budget=0.02, weights=weights)
    unweighted = evaluate(scores[keep], sub_truth, alert_budget=0.02)
    assert estimate.prevalence == pytest.approx(full.prevalence, rel=0.1)
    assert estimate.average_precision == pytest.approx(full.average_precision, rel=0.1)
    assert estimate.recall_at_budget == pytest.approx(full.recall_at_budget, abs=0.05)
    # without the weights the subsample looks far easier than the population
    assert unweighted.average_precision > full.average_precision * 1.3
