"""Helpers for the trainer tests: labels, scored records and cases built from plain values."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import LabelEvent, LabelSource, Typology
from stream.context.features import FEATURE_NAMES
from stream.scorer.records import ScoredRecord
from stream.trainer.cases import LabelledCase

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def event_dict(event_id: str, customer_id: str, at: datetime) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "customer_id": customer_id,
        "account_id": f"acct-{customer_id}",
        "channel": "card",
        "direction": "outbound",
        "amount_minor": 1234,
        "currency": "USD",
        "counterparty_id": "merchant-1",
        "counterparty_type": "merchant",
        "country": "US",
    }


def record(
    event_id: str,
    *,
    customer_id: str = "cust-1",
    at: datetime = T0,
    alerted: bool = False,
    score: float = 0.1,
    features: tuple[float, ...] | None = None,
    narrative: str = "card payment; amount typical",
    model_version: str = "v1",
) -> ScoredRecord:
    return ScoredRecord(
        event_id=event_id,
        customer_id=customer_id,
        event_time_ms=ms(at),
        event=event_dict(event_id, customer_id, at),
        narrative=narrative,
        clause_ids=("event", "amount_level"),
        features=features or tuple(float(i % 7) for i in range(len(FEATURE_NAMES))),
        score=score,
        typology="card_testing",
        model_version=model_version,
        narrative_version="n1",
        alert_id=f"alert-{event_id}" if alerted else None,
        scored_at_ms=ms(at),
        source="tx[0]@1",
    )


def label(
    event_id: str,
    *,
    suspicious: bool = True,
    customer_id: str = "cust-1",
    at: datetime = T0,
    after: timedelta = timedelta(days=1),
    source: LabelSource = LabelSource.ANALYST,
    label_id: str | None = None,
    typology: Typology = Typology.CARD_TESTING,
) -> LabelEvent:
    return LabelEvent(
        label_id=label_id or f"{source.value}-{event_id}",
        event_id=event_id,
        customer_id=customer_id,
        event_time=at,
        label_time=at + after,
        source=source,
        is_suspicious=suspicious,
        typology=typology if suspicious else Typology.LEGITIMATE,
        counterparty_id="merchant-1",
    )


def case(
    event_id: str,
    *,
    suspicious: bool = False,
    at: datetime = T0,
    source: str = "analyst",
    label_time: datetime | None = None,
    label_id: str | None = None,
) -> LabelledCase:
    return LabelledCase(
        label_id=label_id or f"{source}-{event_id}",
        event_id=event_id,
        customer_id="cust-1",
        source=source,
        is_suspicious=suspicious,
        typology="card_testing" if suspicious else "legitimate",
        event_time_ms=ms(at),
        label_time_ms=ms(label_time or at + timedelta(days=1)),
        event=event_dict(event_id, "cust-1", at),
        narrative="card payment",
        narrative_version="n1",
        clause_ids=("event",),
        features=tuple(0.0 for _ in FEATURE_NAMES),
        score=0.5,
        model_version="v1",
        alerted=suspicious,
    )


@pytest.fixture
def make_case() -> Callable[..., LabelledCase]:
    return case


@pytest.fixture
def make_record() -> Callable[..., ScoredRecord]:
    return record


@pytest.fixture
def make_label() -> Callable[..., LabelEvent]:
    return label
