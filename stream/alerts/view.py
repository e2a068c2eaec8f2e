"""Pure helpers for alert subscribers: filtering, de-duplication and human-readable lines."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from schemas import Alert, Direction, Typology
from schemas.reference import minor_unit_exponent


@dataclass(frozen=True, slots=True)
class AlertFilter:
    min_score: float = 0.0
    typologies: frozenset[Typology] = frozenset()
    customers: frozenset[str] = frozenset()

    def accepts(self, alert: Alert) -> bool:
        if alert.score < self.min_score:
            return False
        if self.typologies and alert.typology not in self.typologies:
            return False
        return not self.customers or alert.event.customer_id in self.customers

    @classmethod
    def build(
        cls, min_score: float, typologies: Collection[str], customers: Collection[str]
    ) -> AlertFilter:
        return cls(min_score, frozenset(Typology(t) for t in typologies), frozenset(customers))


class SeenAlerts:
    """Remembers the last `capacity` alert ids: at-least-once delivery may repeat an alert
    (always with the same id), and a reader usually wants each alert once."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, alert_id: str) -> bool:
        if alert_id in self._ids:
            self._ids.move_to_end(alert_id)
            return False
        self._ids[alert_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


def format_amount(amount_minor: int, currency: str) -> str:
    exponent = minor_unit_exponent(currency)
    return f"{amount_minor / 10**exponent:,.{exponent}f} {currency}"


def render(alert: Alert) -> str:
    """Two or three lines a risk analyst can read at a glance."""
    e = alert.event
    arrow = "->" if e.direction is Direction.OUTBOUND else "<-"
    head = (
        f"{alert.event_time:%Y-%m-%d %H:%M:%S}Z  score {alert.score:.3f}  "
        f"{alert.typology.value:<22}  customer {e.customer_id}"
    )
    what = (
        f"    {e.direction.value} {e.channel.value} {format_amount(e.amount_minor, e.currency)} "
        f"{arrow} {e.counterparty_type.value} {e.counterparty_id} ({e.country})  "
        # The alert id is what an analyst's disposition (LabelEvent.alert_id) refers to.
        f"event {e.event_id}  model {alert.model_version}  alert {alert.alert_id}"
    )
    lines = [head, what]
    if alert.reasons:
        lines.append("    why: " + "; ".join(r.text for r in alert.reasons))
    return "\n".join(lines)
