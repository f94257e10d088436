"""The wire format of a transfer: one renderer for the API's answers (`GET /v1/transfers/{id}`
and every other route that shows a transfer) and the data of the webhooks' events, which the
workers render. Pydantic, no HTTP: both the API and the worker import it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.config import JsonDict

from shared.domain.money import format_amount, format_percent, format_rate
from shared.domain.transfers import Transfer, TransferKind, TransferState

# Examples (OpenAPI, "Try it out"): the README's walk-through, so they succeed against `make run`
# once alice and bob exist and alice holds BTC.
ALICE_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
BOB_ID = "9c1f4b52-8d3e-4a57-9b0e-6f2a1d7c8e90"
TRANSFER_ID = "5b0c7e1a-2f64-4c1d-8a3b-9e7d6c5b4a32"
CREATED = "2025-01-15T09:30:00.123456Z"
PROCESSED = "2025-01-15T09:30:00.234567Z"


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


AmountOut = Annotated[Decimal, PlainSerializer(format_amount, return_type=str)]
RateOut = Annotated[Decimal, PlainSerializer(format_rate, return_type=str)]
PercentOut = Annotated[Decimal, PlainSerializer(format_percent, return_type=str)]
Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class ReadModel(BaseModel):
    """A response schema, built from a domain object's attributes."""

    model_config = ConfigDict(from_attributes=True)


TRANSFER_EXAMPLE: JsonDict = {
    "id": TRANSFER_ID,
    "kind": "transfer",
    "from_merchant_id": ALICE_ID,
    "to_merchant_id": BOB_ID,
    "amount": "0.10000000",
    "fee": "0.00200000",
    "percent_fee": "2.00",
    "currency": "BTC",
    "idempotency_key": "abc-123-xyz",
    "state": "pending",
    "failure_reason": None,
    "created": CREATED,
    "processed": None,
    "reverses": None,
    "reversed_amount": "0.00000000",
    "to_currency": None,
    "fx_rate": None,
    "converted_amount": None,
}
# alice pays bob 100 USD (her fee 2%), bob gets euros at 1 USD = 0.92 EUR.
FX_TRANSFER_EXAMPLE: JsonDict = {
    **TRANSFER_EXAMPLE,
    "amount": "100.00000000",
    "fee": "2.00000000",
    "currency": "USD",
    "state": "completed",
    "processed": PROCESSED,
    "to_currency": "EUR",
    "fx_rate": "0.920000000000",
    "converted_amount": "92.00000000",
}


class TransferRead(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                TRANSFER_EXAMPLE,
                {
                    **TRANSFER_EXAMPLE,
                    "state": "completed",
                    "processed": PROCESSED,
                },
                {
                    **TRANSFER_EXAMPLE,
                    "state": "failed",
                    "failure_reason": "Insufficient funds",
                    "processed": PROCESSED,
                },
                FX_TRANSFER_EXAMPLE,
            ]
        }
    )

    id: UUID
    kind: TransferKind = Field(
        description="`transfer` (merchant to merchant, with the fee), `deposit`, `withdrawal` "
        "or `reversal` (money of an earlier transfer given back)."
    )
    # The wire says from/to; inside, a transfer has a sender and a receiver.
    from_merchant_id: UUID | None = Field(
        validation_alias="sender_id", description="null on a deposit."
    )
    to_merchant_id: UUID | None = Field(
        validation_alias="receiver_id", description="null on a withdrawal."
    )
    amount: AmountOut
    fee: AmountOut = Field(description="On a reversal: the fee it gives back.")
    percent_fee: PercentOut
    currency: str
    idempotency_key: str
    state: TransferState = Field(
        description="`pending` until a worker applies it; then `completed` or `failed`, forever."
    )
    failure_reason: str | None
    created: Timestamp
    processed: Timestamp | None
    reverses: UUID | None = Field(description="A reversal's original transfer; else null.")
    reversed_amount: AmountOut | None = Field(
        description="On a `transfer`: the sum of its completed reversals; else null."
    )
    to_currency: str | None = Field(
        description="A cross-currency transfer's receiver currency; null for same-currency."
    )
    fx_rate: RateOut | None = Field(
        description="The rate `currency`→`to_currency` the transfer was submitted with (12 "
        "decimals); null for same-currency."
    )
    converted_amount: AmountOut | None = Field(
        description="What the receiver gets in `to_currency`: `amount` × `fx_rate`, rounded "
        "down to 8 decimals; null for same-currency."
    )


def render_transfer(transfer: Transfer) -> dict[str, Any]:
    """The transfer as `GET /v1/transfers/{id}` renders it, as JSON-ready values."""
    return TransferRead.model_validate(transfer).model_dump(mode="json")
