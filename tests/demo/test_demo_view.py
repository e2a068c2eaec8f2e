"""The demo's live alert quality per model version, on the simulator's truth."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from schemas import Typology
from stream.demo_view import LiveQuality
from stream.simulate.truth import TruthRecord

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def truth_of(event_id: str, suspicious: bool) -> TruthRecord:
    return TruthRecord(
        event_id=event_id,
        event_time=T0,
        customer_id="c1",
        typology=Typology.CARD_TESTING if suspicious else Typology.LEGITIMATE,
        is_suspicious=suspicious,
        scenario_id=None,
        scenario_kind="background",
        role="customer",
        counterparty_id="m1",
        terminal_id=None,
    )


def score(event_id: str, version: str, alerted: bool) -> bytes:
    return orjson.dumps({"event_id": event_id, "model_version": version, "alerted": alerted})


def test_precision_and_recall_per_version_from_the_truth() -> None:
    truth = {f"e{i}": truth_of(f"e{i}", suspicious=i < 4) for i in range(10)}
    quality = LiveQuality()
    # the first model: alerts e0 (fraud) and e5 (not); misses e1
    for event_id, alerted in [("e0", True), ("e1", False), ("e5", True), ("e6", False)]:
        quality.add(score(event_id, "m1", alerted), truth.get)
    quality.add(score("e0", "m1", True), truth.get)  # an at-least-once repeat counts once
    quality.add(score("other-run", "m1", True), truth.get)  # not in this truth: not guessed
    # the promoted model: alerts e2 and e3 (fraud), nothing else
    for event_id, alerted in [("e2", True), ("e3", True), ("e7", False), ("e8", False)]:
        quality.add(score(event_id, "m2", alerted), truth.get)

    first, promoted = quality.versions["m1"], quality.versions["m2"]
    assert (first.events, first.suspicious, first.alerts, first.true_positives) == (4, 2, 2, 1)
    assert (first.precision, first.recall) == (0.5, 0.5)
    assert (promoted.precision, promoted.recall) == (1.0, 1.0)
    assert quality.not_in_truth == 1
    table = quality.table()
    assert table[1].startswith("m1")
    assert table[2].startswith("m2")
    change = quality.change()
    assert change is not None
    assert "precision 0.50 -> 1.00, recall 0.50 -> 1.00" in change


def test_no_change_is_claimed_before_a_second_version_scored() -> None:
    quality = LiveQuality()
    quality.add(score("e0", "m1", True), {"e0": truth_of("e0", True)}.get)
    assert quality.change() is None
    assert len(quality.table()) == 2
