"""Pure helpers of alert subscribers: filters, de-duplication, amounts and readable lines."""

from __future__ import annotations

import pytest

from schemas import Typology
from stream.alerts.view import AlertFilter, SeenAlerts, format_amount, render

from .conftest import make_alert


def test_a_filter_needs_every_condition_it_was_given() -> None:
    alert = make_alert(1, score=0.8, typology=Typology.STRUCTURING, customer="cus-a")
    assert AlertFilter().accepts(alert)
    assert AlertFilter.build(0.8, [], []).accepts(alert)  # the minimum is inclusive
    assert not AlertFilter.build(0.81, [], []).accepts(alert)
    assert AlertFilter.build(0.0, ["structuring", "card_testing"], ["cus-a"]).accepts(alert)
    assert not AlertFilter.build(0.0, ["card_testing"], []).accepts(alert)
    assert not AlertFilter.build(0.0, [], ["cus-b"]).accepts(alert)
    with pytest.raises(ValueError, match="not_a_typology"):
        AlertFilter.build(0.0, ["not_a_typology"], [])


def test_seen_alerts_remembers_a_bounded_number_of_ids() -> None:
    seen = SeenAlerts(capacity=2)
    assert seen.first_time("a")
    assert not seen.first_time("a")
    assert seen.first_time("b")
    assert not seen.first_time("a")  # a seen again: now the most recent
    assert seen.first_time("c")  # evicts b, the least recently seen
    assert seen.first_time("b")
    assert not seen.first_time("c")


@pytest.mark.parametrize(
    ("amount_minor", "currency", "shown"),
    [
        (125_000, "EUR", "1,250.00 EUR"),
        (125_000, "JPY", "125,000 JPY"),
        (1_500, "BHD", "1.500 BHD"),
    ],
)
def test_amounts_use_the_currency_minor_units(amount_minor: int, currency: str, shown: str) -> None:
    assert format_amount(amount_minor, currency) == shown


def test_render_shows_score_typology_customer_amount_and_reasons() -> None:
    alert = make_alert(7, score=0.876, typology=Typology.MULE_FAN_IN_OUT, customer="cus-z")
    lines = render(alert).splitlines()
    assert lines[0].startswith("2026-03-01 09:07:00Z")
    assert "score 0.876" in lines[0]
    assert "mule_fan_in_out" in lines[0]
    assert lines[0].endswith("customer cus-z")
    assert "outbound wire 1,250.00 EUR -> account acc-ext-7 (AE)" in lines[1]
    assert "event ev-0007" in lines[1]
    assert (
        lines[2] == "    why: a transfer far above their usual amounts; to a high-risk jurisdiction"
    )
    without_reasons = alert.model_copy(update={"reasons": []})
    assert len(render(without_reasons).splitlines()) == 2


def test_render_shows_the_alert_id_dispositions_refer_to() -> None:
    alert = make_alert(7, score=0.9, typology=Typology.STRUCTURING, customer="c-7")
    assert render(alert).splitlines()[1].endswith(f"alert {alert.alert_id}")
