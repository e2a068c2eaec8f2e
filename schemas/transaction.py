"""`TransactionEvent`: one payment event, as it arrives on the `transactions` topic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import (
    MAX_AMOUNT_MINOR,
    WIRE_MODEL_CONFIG,
    Channel,
    CounterpartyType,
    CountryCode,
    CurrencyCode,
    CustomerSegment,
    Direction,
    Identifier,
    UtcDatetime,
)
from schemas.reference import minor_unit_exponent


class TransactionEvent(BaseModel):
    """A payment event seen by the bank: card authorisation, transfer, cash or crypto movement.

    Money is an integer count of the currency's minor units (cents for USD, yen for JPY), never
    a float. The event carries no label: what it turned out to be arrives later as a
    `LabelEvent`, so a scorer can never read the answer off its input.
    """

    model_config = WIRE_MODEL_CONFIG

    schema_version: Literal[1] = Field(1, description="Bumped on any incompatible change.")
    event_id: Identifier = Field(
        description="Unique per event across all customers; the idempotency key. A second "
        "message carrying an id already processed is dead-lettered (duplicate_event_id)."
    )
    event_time: UtcDatetime = Field(
        description="When the payment happened (event time), as an RFC 3339 string. The "
        "scorer dead-letters an event dated more than scorer.event_time_max_ahead_s (1 hour) "
        "after its message's broker timestamp (event_time_out_of_window)."
    )
    customer_id: Identifier = Field(description="The bank's customer; the partition key.")
    account_id: Identifier = Field(description="The customer's account or card.")
    customer_segment: CustomerSegment | None = Field(None, description="retail or business.")
    channel: Channel
    direction: Direction
    amount_minor: int = Field(
        gt=0,
        le=MAX_AMOUNT_MINOR,
        description="Amount in minor units of `currency`; positive, at most 10^14 (a trillion "
        "in a 2-decimal currency). Context sums count one payment as at most $100 billion "
        "(converted to US dollars), so no number of payments can overflow them.",
    )
    currency: CurrencyCode
    counterparty_id: Identifier = Field(
        description="Merchant, beneficiary/originator account, ATM, branch or exchange."
    )
    counterparty_type: CounterpartyType
    terminal_id: Identifier | None = Field(None, description="Card terminal, for card payments.")
    mcc: str | None = Field(
        None, pattern=r"^[0-9]{4}$", description="ISO 18245 merchant category code."
    )
    country: CountryCode = Field(
        description="Where the counterparty is: merchant, ATM or beneficiary bank country."
    )
    device_id: str | None = Field(
        None, max_length=128, description="Device fingerprint (hashed), when known."
    )
    ip_fingerprint: str | None = Field(
        None, max_length=128, description="Hashed IP address, when known; never a raw IP."
    )
    memo: str | None = Field(None, max_length=280, description="Payment reference text.")

    @property
    def amount_major(self) -> float:
        """The amount in major units, for display only (floats are never used for money)."""
        return self.amount_minor / 10.0 ** minor_unit_exponent(self.currency)
