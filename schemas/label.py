"""`LabelEvent`: what an event turned out to be, learned after the fact."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from schemas.common import WIRE_MODEL_CONFIG, Identifier, Typology, UtcDatetime


class LabelSource(StrEnum):
    ANALYST = "analyst"  # an analyst's disposition of an alert
    CHARGEBACK = "chargeback"  # a card chargeback, typically weeks after the payment
    CONFIRMED_CASE = "confirmed_case"  # an investigation (e.g. a filed SAR) confirmed it
    FRAUD_REPORT = "fraud_report"  # the customer reported it (e.g. a scam they were talked into)


class LabelEvent(BaseModel):
    """Feedback on one event: an analyst's true/false-positive disposition of an alert, or a
    later chargeback or confirmed case for any event (alerted or not).

    `label_time` is when the label became known: consumers may use a label only from then on,
    which is what keeps backtests honest about the future.
    """

    model_config = WIRE_MODEL_CONFIG

    schema_version: Literal[1] = Field(1, description="Bumped on any incompatible change.")
    label_id: Identifier = Field(description="Unique per label; the idempotency key.")
    event_id: Identifier = Field(description="The labelled TransactionEvent.")
    customer_id: Identifier
    event_time: UtcDatetime = Field(description="Event time of the labelled event.")
    label_time: UtcDatetime = Field(description="When the label became known.")
    source: LabelSource
    is_suspicious: bool = Field(description="True: fraud / laundering. False: legitimate.")
    typology: Typology = Field(description="`legitimate` exactly when is_suspicious is false.")
    counterparty_id: Identifier | None = Field(
        None, description="Counterparty of the labelled event (feeds its label-derived risk)."
    )
    terminal_id: Identifier | None = Field(None, description="Terminal of the labelled event.")
    alert_id: str | None = Field(None, max_length=64, description="The alert dispositioned.")
    scenario_id: Identifier | None = Field(
        None, description="Links the events of one case (e.g. one mule network)."
    )
    note: str | None = Field(None, max_length=1000, description="Free text from the analyst.")

    @model_validator(mode="after")
    def _typology_matches_verdict(self) -> LabelEvent:
        if self.is_suspicious == (self.typology is Typology.LEGITIMATE):
            raise ValueError(
                "typology must be 'legitimate' exactly when is_suspicious is false "
                f"(got is_suspicious={self.is_suspicious}, typology={self.typology.value!r})"
            )
        if self.label_time < self.event_time:
            raise ValueError("label_time is before event_time: a label cannot precede its event")
        return self
