"""The shared backoff: the pause after n failed attempts."""

from __future__ import annotations

from stream.pipeline.retry import BACKOFF, Backoff


def test_the_pause_doubles_per_failed_attempt_up_to_the_cap() -> None:
    assert [BACKOFF.delay(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_a_custom_backoff_starts_and_caps_where_it_is_told() -> None:
    backoff = Backoff(first_s=1.0, max_s=3.0)
    assert [backoff.delay(n) for n in (0, 1, 2, 3)] == [1.0, 1.0, 2.0, 3.0]
