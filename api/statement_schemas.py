"""Statement query and response schemas (`GET /v1/merchants/{name}/statement`).

Values are checked by the domain's parsers (`shared/domain/statements.py`), as in
`api/schemas.py`, whose types and helpers these reuse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from api.schemas import (
    CREATED,
    PROCESSED,
    TRANSFER_ID,
    AmountOut,
    CurrencyIn,
    Timestamp,
    _domain_rule,
)
from shared.domain.errors import InvalidInput
from shared.domain.statements import (
    MOMENT_EXAMPLE,
    EntryKind,
    Statement,
    StatementEntry,
    Window,
    parse_moment,
)

MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 200
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
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Entries per page.")
    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
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
