"""Request and response schemas. Values are checked by the domain's parsers (one message per
rule, `_domain_rule`); only rules about the request's shape live here (unknown fields, the same
merchant on both sides)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from shared.domain.access import RateLimit, Scope, parse_key_name, parse_rate_limit
from shared.domain.batches import BatchProgress
from shared.domain.errors import InvalidInput
from shared.domain.fee_tiers import FeeTier, parse_fee_tiers
from shared.domain.limits import BalanceLimit, LimitUsage, parse_limits
from shared.domain.merchants import (
    FeeTiersChange,
    MerchantChanges,
    MerchantWithBalances,
    parse_merchant_name,
)
from shared.domain.money import (
    parse_amount,
    parse_currency,
    parse_percent_fee,
    parse_rate,
)
from shared.domain.statements import (
    MOMENT_EXAMPLE,
    EntryKind,
    Statement,
    StatementEntry,
    Window,
    parse_moment,
)
from shared.domain.transfers import (
    ReversalRequest,
    TransferKind,
    TransferRequest,
    parse_idempotency_key,
)
from shared.domain.webhooks import (
    DeliveryState,
    EndpointRequest,
    EventType,
    WebhookUrl,
    format_event_id,
    parse_description,
    parse_event_types,
    parse_webhook_url,
)
from shared.infra.wire import (
    ALICE_ID,
    CREATED,
    PROCESSED,
    TRANSFER_ID,
    AmountOut,
    PercentOut,
    RateOut,
    ReadModel,
    Timestamp,
)
from shared.infra.wire import TRANSFER_EXAMPLE as _TRANSFER_EXAMPLE
from shared.infra.wire import (
    TransferRead as TransferRead,  # re-exported: the routes render transfers with it
)

T = TypeVar("T")

# Examples (OpenAPI, "Try it out"): the README's walk-through, so they succeed against `make run`
# once alice and bob exist and alice holds BTC (the transfer's own: `shared.infra.wire`).
BATCH_ID = "0f8e2d1c-4b3a-4c5d-9e6f-7a8b9c0d1e2f"
KEY_ID = "7d9e1f2a-3b4c-4d5e-8f6a-1b2c3d4e5f60"


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
RateIn = Annotated[
    Decimal, PlainValidator(_domain_rule(parse_rate), json_schema_input_type=_DECIMAL_INPUT)
]
MerchantNameIn = Annotated[
    str, PlainValidator(_domain_rule(parse_merchant_name), json_schema_input_type=str)
]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MerchantCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "alice", "percent_fee": "2.00"},
                {"name": "bob", "percent_fee": "0"},
            ]
        }
    )

    name: MerchantNameIn
    percent_fee: PercentFeeIn


class FeeTierIn(RequestModel):
    from_volume: Decimal = Field(
        description="The monthly volume (in the transfer's currency) from which this tier's "
        "fee applies: the first tier starts from 0, each later one strictly higher.",
        json_schema_extra={"type": "string", "examples": ["10000"]},
    )
    percent_fee: Decimal = Field(json_schema_extra={"type": "string", "examples": ["1.50"]})


class LimitIn(RequestModel):
    currency: str
    period: Literal["day", "month"]
    max_amount: Decimal = Field(
        description="The most amount + fee that transfers and withdrawals may debit from "
        "this balance in one UTC day or month (reaching it exactly is allowed).",
        json_schema_extra={"type": "string", "examples": ["1000"]},
    )


FeeTiersIn = Annotated[
    tuple[FeeTier, ...],
    PlainValidator(_domain_rule(parse_fee_tiers), json_schema_input_type=list[FeeTierIn]),
]
LimitsIn = Annotated[
    tuple[BalanceLimit, ...],
    PlainValidator(_domain_rule(parse_limits), json_schema_input_type=list[LimitIn]),
]


class MerchantUpdate(RequestModel):
    """What to change; a field left out stays as it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"percent_fee": "1.50"},
                {"archived": True},
                {
                    "fee_tiers": [
                        {"from_volume": "0", "percent_fee": "2.00"},
                        {"from_volume": "10000", "percent_fee": "1.50"},
                    ]
                },
                {"limits": [{"currency": "USD", "period": "day", "max_amount": "1000"}]},
            ]
        }
    )

    percent_fee: PercentFeeIn | None = None
    archived: StrictBool | None = None
    fee_tiers: FeeTiersIn | None = Field(
        default=None,
        description="Volume fee tiers: a transfer pays the fee of the tier its sender's volume "
        "this UTC month falls in. `null` returns to the flat `percent_fee`.",
    )
    limits: LimitsIn | None = Field(
        default=None,
        description="Daily and monthly limits per balance; replaces every limit, `[]` "
        "removes them.",
    )

    def to_domain(self) -> MerchantChanges:
        tiers = FeeTiersChange(self.fee_tiers) if "fee_tiers" in self.model_fields_set else None
        return MerchantChanges(self.percent_fee, self.archived, tiers, self.limits)


class BalanceCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"merchant_id": ALICE_ID, "currency": "BTC", "initial_amount": "1.5"}]
        }
    )

    merchant_id: UUID = Field(description="The merchant's `id`, from `GET /v1/merchants/{name}`.")
    currency: CurrencyIn
    initial_amount: InitialAmountIn


class TransferCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"from_merchant": "alice", "to_merchant": "bob", "amount": "0.1", "currency": "BTC"}
            ]
        }
    )

    from_merchant: MerchantNameIn
    to_merchant: MerchantNameIn
    amount: AmountIn
    currency: CurrencyIn
    to_currency: CurrencyIn | None = Field(
        default=None,
        description="The receiver's currency, when it differs from `currency`: the receiver "
        "gets `amount` × the current rate `currency`→`to_currency` (`PUT /v1/fx-rates`), "
        "rounded down to 8 decimals. Absent, null or equal to `currency`: no conversion.",
    )

    @model_validator(mode="after")
    def _distinct_merchants(self) -> TransferCreate:
        if self.from_merchant == self.to_merchant:
            # A rule about two fields; `field` names the one a 422's details blame.
            raise PydanticCustomError(
                "same_merchant", "Cannot transfer to the same merchant", {"field": "to_merchant"}
            )
        return self

    def to_domain(self) -> TransferRequest:
        return TransferRequest(
            self.from_merchant,
            self.to_merchant,
            self.amount,
            self.currency,
            to_currency=self.to_currency,
        )


class MovementCreate(RequestModel):
    """A deposit or a withdrawal: one merchant, an amount, a currency."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"merchant": "alice", "amount": "0.5", "currency": "BTC"}]}
    )

    merchant: MerchantNameIn
    amount: AmountIn
    currency: CurrencyIn

    def to_domain(self, kind: TransferKind) -> TransferRequest:
        if kind is TransferKind.DEPOSIT:
            return TransferRequest(None, self.merchant, self.amount, self.currency, kind)
        return TransferRequest(self.merchant, None, self.amount, self.currency, kind)


class ReversalCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": "0.05"}, {}]})

    amount: AmountIn | None = Field(
        default=None, description="Default: all of the transfer that is not reversed yet."
    )

    def to_domain(self, original_id: UUID) -> ReversalRequest:
        return ReversalRequest(original_id, self.amount)


class ApiKeyCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "alice app",
                    "merchant": "alice",
                    "scope": "write",
                    "rate_limit": "10/second",
                }
            ]
        }
    )

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


_BALANCE_EXAMPLE: JsonDict = {
    "id": "b1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    "merchant_id": ALICE_ID,
    "currency": "BTC",
    "amount": "1.50000000",
}
_MERCHANT_EXAMPLE: JsonDict = {
    "id": ALICE_ID,
    "name": "alice",
    "percent_fee": "2.00",
    "created": CREATED,
    "updated": CREATED,
    "archived": False,
    "fee_tiers": None,
}
_FX_RATE_EXAMPLE: JsonDict = {
    "base": "USD",
    "quote": "EUR",
    "rate": "0.920000000000",
    "updated": CREATED,
}
_API_KEY_EXAMPLE: JsonDict = {
    "id": KEY_ID,
    "name": "alice app",
    "merchant": "alice",
    "scope": "write",
    "rate_limit": "10/second",
    "created": CREATED,
    "revoked": None,
}


class BalanceRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_BALANCE_EXAMPLE]})

    id: UUID
    merchant_id: UUID
    currency: str
    amount: AmountOut


class FeeTierRead(ReadModel):
    from_volume: AmountOut
    percent_fee: PercentOut


class MerchantRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_MERCHANT_EXAMPLE]})

    id: UUID
    name: str
    percent_fee: PercentOut
    fee_tiers: list[FeeTierRead] | None = Field(
        description="Volume fee tiers; null: every transfer pays the flat `percent_fee`."
    )
    created: Timestamp
    updated: Timestamp
    archived: bool


class LimitRead(ReadModel):
    currency: str
    period: Literal["day", "month"]
    max_amount: AmountOut
    used: AmountOut = Field(
        description="What transfers and withdrawals completed in the current UTC day or "
        "month debited from the balance (amount + fee)."
    )

    @classmethod
    def of(cls, usage: LimitUsage) -> LimitRead:
        limit = usage.limit
        return cls(
            currency=limit.currency,
            period=limit.period.value,
            max_amount=limit.max_amount,
            used=usage.used,
        )


class MerchantWithBalancesRead(MerchantRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_MERCHANT_EXAMPLE, "balances": [_BALANCE_EXAMPLE], "limits": []}]
        }
    )

    balances: list[BalanceRead]
    limits: list[LimitRead]

    @classmethod
    def of_merchant(cls, found: MerchantWithBalances) -> MerchantWithBalancesRead:
        return cls(
            **MerchantRead.model_validate(found.merchant).model_dump(),
            balances=[BalanceRead.model_validate(balance) for balance in found.balances],
            limits=[LimitRead.of(usage) for usage in found.limits],
        )


class Envelope(BaseModel, Generic[T]):
    status: int
    result: T


class PageEnvelope(BaseModel, Generic[T]):
    status: int
    result: list[T]
    next_cursor: str | None


class ErrorEnvelope(BaseModel):
    """A domain error: `{"status": <code>, "error": "<message>"}`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": 404, "error": "From merchant or to merchant does not exist"},
                {"status": 401, "error": "Missing or invalid API key"},
            ]
        }
    )

    status: int
    error: str


class ErrorDetail(BaseModel):
    """One problem of a 422, and the input it is about."""

    field: str = Field(
        description="`body.<name>`, `header.<Name>`, `query.<name>` or `path.<name>` "
        "(`body` alone: the body as a whole, e.g. invalid JSON).",
        examples=["header.Idempotency-Key"],
    )
    message: str = Field(examples=["Field required"])


class ValidationErrorEnvelope(BaseModel):
    """A malformed request (422): every message, and where each problem is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": 422,
                    "error": ["Field required", "Amount must be greater than 0"],
                    "details": [
                        {"field": "header.Idempotency-Key", "message": "Field required"},
                        {"field": "body.amount", "message": "Amount must be greater than 0"},
                    ],
                }
            ]
        }
    )

    status: int
    error: list[str]
    details: list[ErrorDetail] = Field(description="One per message of `error`, in its order.")


IdempotencyKeyIn = Annotated[
    str, PlainValidator(_domain_rule(parse_idempotency_key), json_schema_input_type=str)
]


class BatchItemCreate(TransferCreate):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "idempotency_key": "pay-1",
                    "from_merchant": "alice",
                    "to_merchant": "bob",
                    "amount": "0.01",
                    "currency": "BTC",
                }
            ]
        }
    )

    idempotency_key: IdempotencyKeyIn
    kind: Literal["transfer"] = "transfer"


class BatchMovementItemCreate(MovementCreate):
    """A deposit (admin keys) or a withdrawal in a batch, as `POST /v1/deposits` or
    `/v1/withdrawals` would take it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "idempotency_key": "payout-1",
                    "kind": "withdrawal",
                    "merchant": "bob",
                    "amount": "0.01",
                    "currency": "BTC",
                }
            ]
        }
    )

    idempotency_key: IdempotencyKeyIn
    kind: Literal["deposit", "withdrawal"]


def parse_batch_item(raw: Any) -> tuple[str, TransferRequest]:
    """One item's key and request: a transfer, or (by its `kind`) a deposit or a withdrawal.
    Raises pydantic's ValidationError, fields relative to the item."""
    if isinstance(raw, dict) and raw.get("kind") in ("deposit", "withdrawal"):
        movement = BatchMovementItemCreate.model_validate(raw)
        return movement.idempotency_key, movement.to_domain(TransferKind(movement.kind))
    transfer = BatchItemCreate.model_validate(raw)
    return transfer.idempotency_key, transfer.to_domain()


class BatchCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "transfers": [
                        {
                            "idempotency_key": f"pay-{n}",
                            "from_merchant": "alice",
                            "to_merchant": "bob",
                            "amount": "0.01",
                            "currency": "BTC",
                        }
                        for n in (1, 2)
                    ]
                }
            ]
        }
    )

    # Items are validated one by one (a bad item is refused alone), so they arrive raw here.
    transfers: Annotated[
        list[Any],
        Field(
            min_length=1,
            description="Up to 10,000 items. A transfer: `{idempotency_key, from_merchant, "
            "to_merchant, amount, currency}` and optionally `to_currency`; a deposit or a "
            'withdrawal: `{idempotency_key, "kind": "deposit" | "withdrawal", merchant, amount, '
            "currency}`.",
        ),
    ]


class ItemError(BaseModel):
    """A refused batch item: as the same single request's error (a list, with details, for 422;
    `field` relative to the item, e.g. `body.amount`)."""

    status: int
    message: str | list[str]
    details: list[ErrorDetail] | None = Field(
        default=None, exclude_if=lambda details: details is None
    )


class BatchItemRead(BaseModel):
    index: int
    transfer: TransferRead | None = None
    error: ItemError | None = None


class BatchRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": BATCH_ID,
                    "accepted": 1,
                    "refused": 2,
                    "items": [
                        {"index": 0, "transfer": {**_TRANSFER_EXAMPLE, "idempotency_key": "pay-1"}},
                        {
                            "index": 1,
                            "error": {
                                "status": 404,
                                "message": "From merchant or to merchant does not exist",
                            },
                        },
                        {
                            "index": 2,
                            "error": {
                                "status": 422,
                                "message": ["Field required"],
                                "details": [{"field": "body.amount", "message": "Field required"}],
                            },
                        },
                    ],
                }
            ]
        }
    )

    id: UUID
    accepted: int
    refused: int
    items: list[BatchItemRead]


class BatchCounts(BaseModel):
    pending: int
    completed: int
    failed: int


class BatchProgressRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": BATCH_ID,
                    "created": CREATED,
                    "accepted": 1,
                    "refused": 2,
                    "counts": {"pending": 0, "completed": 1, "failed": 0},
                    "finished": True,
                }
            ]
        }
    )

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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"queue_depth": 0, "pending_transfers": 0, "oldest_pending_age_s": None}]
        }
    )

    queue_depth: int | None
    pending_transfers: int
    oldest_pending_age_s: float | None


class FxRateSet(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"rate": "0.92"}]})

    rate: RateIn = Field(
        description="1 BASE = `rate` QUOTE: positive, at most 12 decimals (a string or a number)."
    )


class FxRateRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_FX_RATE_EXAMPLE]})

    base: str
    quote: str
    rate: RateOut = Field(description="1 `base` = `rate` `quote`, with exactly 12 decimals.")
    updated: Timestamp = Field(description="When the rate was last set.")


class ApiKeyRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_API_KEY_EXAMPLE]})

    id: UUID
    name: str
    merchant: str | None = Field(validation_alias="merchant_name")
    scope: Scope
    rate_limit: Annotated[RateLimit | None, PlainSerializer(_optional_str, return_type=str | None)]
    created: Timestamp
    revoked: Timestamp | None


class ApiKeyCreatedRead(ApiKeyRead):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_API_KEY_EXAMPLE, "secret": "mlk_" + "x" * 43}]}
    )

    secret: str = Field(description="Shown only in this answer; store it now.")


# Statements (`GET /v1/merchants/{name}/statement`): values checked by the domain's parsers
# (`shared/domain/statements.py`).
MAX_STATEMENT_LIMIT = 1000
MAX_STATEMENT_CURSOR_LENGTH = 200
OTHER_TRANSFER_ID = "6c1d8f2b-3a75-4d2e-9b4c-0f8e7d6c5b43"


def _moment_in(what: str) -> object:
    return PlainValidator(
        _domain_rule(lambda value: parse_moment(value, what=what)), json_schema_input_type=str
    )


class StatementQuery(BaseModel):
    """The query string of a statement request."""

    currency: CurrencyIn = Field(description="The balance's currency (any case).")
    start: Annotated[datetime | None, _moment_in("from")] = Field(
        default=None,
        alias="from",
        description="Postings at or after this ISO 8601 time with a timezone "
        f"(`{MOMENT_EXAMPLE}`; `+01:00` URL-encoded as `%2B01:00`). Default: from the first.",
    )
    end: Annotated[datetime | None, _moment_in("to")] = Field(
        default=None,
        alias="to",
        description="Postings before this time (exclusive). Default: up to the current balance.",
    )
    limit: int = Field(default=100, ge=1, le=MAX_STATEMENT_LIMIT, description="Entries per page.")
    cursor: str | None = Field(
        default=None,
        max_length=MAX_STATEMENT_CURSOR_LENGTH,
        description="`next_cursor` of the previous page, with the same merchant, currency, "
        "`from` and `to`.",
    )

    @model_validator(mode="after")
    def _window_not_empty(self) -> StatementQuery:
        self.window()
        return self

    def window(self) -> Window:
        try:
            return Window(self.start, self.end)
        except InvalidInput as error:
            # A rule about two parameters; `field` names the one a 422's details blame.
            raise PydanticCustomError("window", error.message, {"field": "to"}) from error


# No null in these examples: FastAPI drops nulls from the document, and `api/docs.py` puts back
# as written only the examples of `api/schemas.py`'s models.
_SENT_ENTRY: JsonDict = {
    "transfer_id": TRANSFER_ID,
    "kind": "transfer",
    "amount": "-0.10200000",
    "balance_after": "1.39800000",
    "posted": CREATED,
}
_RECEIVED_ENTRY: JsonDict = {
    "transfer_id": OTHER_TRANSFER_ID,
    "kind": "transfer",
    "amount": "0.05000000",
    "balance_after": "1.44800000",
    "posted": PROCESSED,
}


class StatementEntryRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_SENT_ENTRY]})

    transfer_id: UUID | None = Field(description="null for a balance's initial amount.")
    kind: EntryKind
    amount: AmountOut = Field(
        description="Signed: a sender's entry is -(amount + fee), a receiver's +amount."
    )
    balance_after: AmountOut = Field(description="The previous entry's + `amount`.")
    posted: Timestamp

    @classmethod
    def of(cls, entry: StatementEntry) -> StatementEntryRead:
        return cls(
            transfer_id=entry.transfer_id,
            kind=entry.kind,
            amount=entry.amount,
            balance_after=entry.balance_after,
            posted=entry.posted,
        )


class StatementRead(BaseModel):
    model_config = ConfigDict(
        serialize_by_alias=True,
        validate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "merchant": "alice",
                    "currency": "BTC",
                    "from": "2025-01-15T00:00:00Z",
                    "to": "2025-01-16T00:00:00Z",
                    "opening_balance": "1.50000000",
                    "closing_balance": "1.44800000",
                    "entries": [_SENT_ENTRY, _RECEIVED_ENTRY],
                }
            ]
        },
    )

    merchant: str
    currency: str
    start: Timestamp | None = Field(alias="from", description="The request's `from`, in UTC.")
    end: Timestamp | None = Field(alias="to", description="The request's `to`, in UTC.")
    opening_balance: AmountOut = Field(description="The balance just before `from` (0 if none).")
    closing_balance: AmountOut = Field(
        description="The balance after the window's last posting (the current balance without "
        "`to`). Both are the same on every page: opening + every page's amounts = closing."
    )
    entries: list[StatementEntryRead] = Field(description="Oldest first.")

    @classmethod
    def of(cls, statement: Statement) -> StatementRead:
        return cls(
            merchant=statement.merchant,
            currency=statement.currency,
            start=statement.window.start,
            end=statement.window.end,
            opening_balance=statement.opening_balance,
            closing_balance=statement.closing_balance,
            entries=[StatementEntryRead.of(entry) for entry in statement.entries],
        )


class StatementEnvelope(BaseModel):
    status: int
    result: StatementRead
    next_cursor: str | None = Field(description="The next page's `cursor`; null on the last.")


class AuditRead(BaseModel):
    """`GET /v1/audit`'s result, and what `mini-ledger audit` prints."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ok": False,
                    "checked_at": "2025-01-15T09:30:00.123456Z",
                    "transfers": 1000000,
                    "entries": 2782000,
                    "pending": 12,
                    "problems": ["3 balances do not match the journal"],
                }
            ]
        }
    )

    ok: bool
    checked_at: Timestamp
    transfers: int
    entries: int
    pending: int  # transfers on their way: not a problem
    problems: list[str]


# Webhooks (`api/routers/webhooks.py`): values checked by the domain's parsers
# (`shared/domain/webhooks.py`).
ENDPOINT_ID = "2e4f6a8b-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
EVENT_ID = "evt_8f14e45fceea467f9c1a2b3c4d5e6f70"
WebhookUrlIn = Annotated[
    WebhookUrl, PlainValidator(_domain_rule(parse_webhook_url), json_schema_input_type=str)
]
EventTypesIn = Annotated[
    tuple[EventType, ...],
    PlainValidator(_domain_rule(parse_event_types), json_schema_input_type=list[EventType]),
]
DescriptionIn = Annotated[
    str | None,
    PlainValidator(_domain_rule(parse_description), json_schema_input_type=str | None),
]
EventIdOut = Annotated[UUID, PlainSerializer(format_event_id, return_type=str)]


class WebhookEndpointCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/mini-ledger",
                    "events": ["transfer.completed", "transfer.failed"],
                    "description": "alice's shop",
                }
            ]
        }
    )

    url: WebhookUrlIn = Field(
        description="http(s); refused when its host is (or resolves to) a loopback or private "
        "address, unless the server sets WEBHOOK_ALLOW_PRIVATE=true."
    )
    events: EventTypesIn = Field(
        default=(EventType.TRANSFER_COMPLETED, EventType.TRANSFER_FAILED),
        description="Which final states to be told of; default both.",
    )
    description: DescriptionIn = None

    def to_domain(self) -> EndpointRequest:
        return EndpointRequest(self.url, self.events, self.description)


_ENDPOINT_EXAMPLE: JsonDict = {
    "id": ENDPOINT_ID,
    "url": "https://hooks.example.com/mini-ledger",
    "events": ["transfer.completed", "transfer.failed"],
    "merchant": "alice",
    "description": "alice's shop",
    "created": CREATED,
    "deleted": None,
}


class WebhookEndpointRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_ENDPOINT_EXAMPLE]})

    id: UUID
    url: str
    events: list[EventType]
    merchant: str | None = Field(
        validation_alias="merchant_name",
        description="The merchant whose transfers' events it receives; null: every merchant's "
        "(an admin key's endpoint).",
    )
    description: str | None
    created: Timestamp
    deleted: Timestamp | None = Field(description="Set once deleted: nothing is sent after.")


class WebhookEndpointCreatedRead(WebhookEndpointRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_ENDPOINT_EXAMPLE, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]
        }
    )

    secret: str = Field(
        description="`whsec_` + base64 of 32 random bytes: verify each delivery's "
        "`webhook-signature` with it. Shown only in this answer; store it now."
    )


class WebhookAttemptRead(ReadModel):
    """One attempt at delivering one event to the endpoint."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": EVENT_ID,
                    "type": "transfer.completed",
                    "status_code": 503,
                    "error": None,
                    "attempted": CREATED,
                    "next_attempt": "2025-01-15T09:30:05.123456Z",
                    "delivered": False,
                }
            ]
        }
    )

    event_id: EventIdOut
    type: EventType
    status_code: int | None = Field(description="The receiver's answer; null if none came.")
    error: str | None = Field(description="Why no answer came (timeout, connection, ...).")
    attempted: Timestamp
    next_attempt: Timestamp | None = Field(
        description="When it is tried again; null once delivered or given up."
    )
    delivered: bool = Field(description="A 2xx within 10 s.")


class WebhookDeliveryRead(ReadModel):
    """One event to one endpoint, as it stands."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": EVENT_ID,
                    "type": "transfer.completed",
                    "state": "pending",
                    "attempts": 10,
                    "next_attempt": CREATED,
                    "delivered": None,
                }
            ]
        }
    )

    event_id: EventIdOut
    type: EventType
    state: DeliveryState = Field(
        description="`pending` (due at `next_attempt`), `delivered`, `failed` (given up) or "
        "`cancelled` (its endpoint deleted)."
    )
    attempts: int
    next_attempt: Timestamp | None
    delivered: Timestamp | None = Field(description="When a 2xx last answered it.")
