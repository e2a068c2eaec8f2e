"""When a fine-tune or a shadow review is due."""

from __future__ import annotations

from stream.settings import Settings, TrainerSettings
from stream.trainer.loop import due, review_due
from stream.trainer.store import TrainerState

MIN = 60_000


def settings(**trainer: object) -> Settings:
    base = {"finetune_every_labels": 100, "finetune_every_minutes": 30, "min_labels_per_class": 5}
    return Settings(trainer=TrainerSettings.model_validate({**base, **trainer}))


def state(
    new: int, *, suspicious: int = 50, legitimate: int = 50, last_ms: int = 0
) -> TrainerState:
    return TrainerState(
        seq=1000 + new,
        finetune_seq=1000,
        finetune_at_ms=last_ms,
        suspicious=suspicious,
        legitimate=legitimate,
    )


def test_enough_new_cases_trigger_a_fine_tune() -> None:
    now = 10 * MIN
    assert due(state(99, last_ms=now - MIN), now, settings()) is None
    reason = due(state(100, last_ms=now - MIN), now, settings())
    assert reason is not None
    assert "100 new cases" in reason


def test_time_triggers_only_with_something_new() -> None:
    now = 100 * MIN
    assert due(state(3, last_ms=now - 29 * MIN), now, settings()) is None
    assert due(state(3, last_ms=now - 30 * MIN), now, settings()) is not None
    assert due(state(0, last_ms=now - 300 * MIN), now, settings()) is None
    first = due(state(1, last_ms=0), now, settings())  # never fine-tuned yet
    assert first == "1 new cases and no fine-tune yet"


def test_the_guardrail_holds_back_a_fine_tune_without_enough_labels_per_class() -> None:
    now = 100 * MIN
    assert due(state(500, suspicious=4), now, settings()) is None
    assert due(state(500, legitimate=4), now, settings()) is None
    assert due(state(500, suspicious=5, legitimate=5), now, settings()) is not None


def test_a_shadow_is_reviewed_after_its_time() -> None:
    s = settings(shadow_minutes=10)
    since = TrainerState(shadow_since_ms=MIN)
    assert not review_due(since, "v2", 10 * MIN, s)
    assert review_due(since, "v2", 11 * MIN, s)
    assert not review_due(since, None, 11 * MIN, s)
    assert not review_due(TrainerState(), "v2", 11 * MIN, s)  # a shadow the trainer did not set
