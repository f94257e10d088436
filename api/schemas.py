"""Request and response schemas. Values are checked by the domain's parsers (one message per
rule, `_domain_rule`); only rules about the request's shape live here (unknown fields, the same
merchant on both sides)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.domain.access import RateLimit, Scope, parse_key_name, parse_rate_limit
from shared.domain.batches import BatchProgress
from shared.domain.errors import InvalidInput
from shared.domain.merchants import MerchantWithBalances, parse_merchant_name
from shared.domain.money import (
    format_amount,
    format_percent,
    parse_amount,
    parse_currency,
    parse_percent_fee,
)
from shared.domain.transfers import TransferRequest, parse_idempotency_key

T = TypeVar("T")


def _domain_rule(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run a domain parser; its message becomes the validation message, with no prefix."""

    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except InvalidInput as error:
            raise PydanticCustomError("invalid", error.message) from error

    return validate


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_DECIMAL_INPUT = str | int | float  # as documented in OpenAPI; floats never reach a parser

AmountIn = Annotated[
    Decimal, PlainValidator(_domain_rule(parse_amount), json_schema_input_type=_DECIMAL_INPUT)
]
InitialAmountIn = Annotated[
    Decimal,
    PlainValidator(
        _domain_rule(lambda value: parse_amount(value, what="Initial amount", allow_zero=True)),
        json_schema_input_type=_DECIMAL_INPUT,
    ),
]
PercentFeeIn = Annotated[
    Decimal, PlainValidator(_domain_rule(parse_percent_fee), json_schema_input_type=_DECIMAL_INPUT)
]
CurrencyIn = Annotated[
    str, PlainValidator(_domain_rule(parse_currency), json_schema_input_type=str)
]
MerchantNameIn = Annotated[
    str, PlainValidator(_domain_rule(parse_merchant_name), json_schema_input_type=str)
]

AmountOut = Annotated[Decimal, PlainSerializer(format_amount, return_type=str)]
PercentOut = Annotated[Decimal, PlainSerializer(format_percent, return_type=str)]
Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MerchantCreate(RequestModel):
    name: MerchantNameIn
    percent_fee: PercentFeeIn


class BalanceCreate(RequestModel):
    merchant_id: UUID
    currency: CurrencyIn
    initial_amount: InitialAmountIn


class TransferCreate(RequestModel):
    from_merchant: MerchantNameIn
    to_merchant: MerchantNameIn
    amount: AmountIn
    currency: CurrencyIn

    @model_validator(mode="after")
    def _distinct_merchants(self) -> TransferCreate:
        if self.from_merchant == self.to_merchant:
            raise PydanticCustomError("same_merchant", "Cannot transfer to the same merchant")
        return self

    def to_domain(self) -> TransferRequest:
        return TransferRequest(self.from_merchant, self.to_merchant, self.amount, self.currency)


class ApiKeyCreate(RequestModel):
    name: Annotated[str, PlainValidator(_domain_rule(parse_key_name), json_schema_input_type=str)]
    merchant: MerchantNameIn | None = Field(
        default=None, description="The merchant the key acts for; null for an admin key."
    )
    scope: Scope = Scope.WRITE
    rate_limit: Annotated[
        RateLimit | None,
        PlainValidator(
            _domain_rule(lambda value: None if value is None else parse_rate_limit(value)),
            json_schema_input_type=str | None,
        ),
    ] = Field(default=None, description='"<n>/second" or "<n>/minute"; null: the default.')


class ReadModel(BaseModel):
    """A response schema, built from a domain object's attributes."""

    model_config = ConfigDict(from_attributes=True)


class BalanceRead(ReadModel):
    id: UUID
    merchant_id: UUID
    currency: str
    amount: AmountOut


class MerchantRead(ReadModel):
    id: UUID
    name: str
    percent_fee: PercentOut
    created: Timestamp
    updated: Timestamp
    archived: bool


class MerchantWithBalancesRead(MerchantRead):
    balances: list[BalanceRead]

    @classmethod
    def of_merchant(cls, found: MerchantWithBalances) -> MerchantWithBalancesRead:
        return cls(
            **MerchantRead.model_validate(found.merchant).model_dump(),
            balances=[BalanceRead.model_validate(balance) for balance in found.balances],
        )


class TransferRead(ReadModel):
    id: UUID
    # The wire says from/to; inside, a transfer has a sender and a receiver.
    from_merchant_id: UUID = Field(validation_alias="sender_id")
    to_merchant_id: UUID = Field(validation_alias="receiver_id")
    amount: AmountOut
    fee: AmountOut
    percent_fee: PercentOut
    currency: str
    idempotency_key: str
    state: str
    failure_reason: str | None
    created: Timestamp
    processed: Timestamp | None


class Envelope(BaseModel, Generic[T]):
    status: int
    result: T


class PageEnvelope(BaseModel, Generic[T]):
    status: int
    result: list[T]
    next_cursor: str | None


class ErrorEnvelope(BaseModel):
    status: int
    error: str | list[str]


IdempotencyKeyIn = Annotated[
    str, PlainValidator(_domain_rule(parse_idempotency_key), json_schema_input_type=str)
]


class BatchItemCreate(TransferCreate):
    idempotency_key: IdempotencyKeyIn


class BatchCreate(RequestModel):
    # Items are validated one by one (a bad item is refused alone), so they arrive raw here.
    transfers: Annotated[list[Any], Field(min_length=1)]


class ItemError(BaseModel):
    status: int
    message: str | list[str]


class BatchItemRead(BaseModel):
    index: int
    transfer: TransferRead | None = None
    error: ItemError | None = None


class BatchRead(BaseModel):
    id: UUID
    accepted: int
    refused: int
    items: list[BatchItemRead]


class BatchCounts(BaseModel):
    pending: int
    completed: int
    failed: int


class BatchProgressRead(BaseModel):
    id: UUID
    created: Timestamp
    accepted: int
    refused: int
    counts: BatchCounts
    finished: bool

    @classmethod
    def of(cls, progress: BatchProgress) -> BatchProgressRead:
        return cls(
            id=progress.id,
            created=progress.created,
            accepted=progress.accepted,
            refused=progress.refused,
            counts=BatchCounts(
                pending=progress.pending, completed=progress.completed, failed=progress.failed
            ),
            finished=progress.finished,
        )


class QueueStatusRead(BaseModel):
    queue_depth: int | None
    pending_transfers: int
    oldest_pending_age_s: float | None


class ApiKeyRead(ReadModel):
    id: UUID
    name: str
    merchant: str | None = Field(validation_alias="merchant_name")
    scope: Scope
    rate_limit: Annotated[RateLimit | None, PlainSerializer(_optional_str, return_type=str | None)]
    created: Timestamp
    revoked: Timestamp | None


class ApiKeyCreatedRead(ApiKeyRead):
    secret: str = Field(description="Shown only in this answer; store it now.")
