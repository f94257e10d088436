"""What both sides read of a transfer, and the array-parameter helper their statements share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from shared.db.tables import transfers
from shared.domain.transfers import Transfer, TransferKind, TransferState

TRANSFER_COLUMNS = (
    transfers.c.id,
    transfers.c.kind,
    transfers.c.from_merchant_id,
    transfers.c.to_merchant_id,
    transfers.c.amount,
    transfers.c.fee,
    transfers.c.percent_fee,
    transfers.c.currency,
    transfers.c.idempotency_key,
    transfers.c.state,
    transfers.c.failure_reason,
    transfers.c.created,
    transfers.c.processed,
    transfers.c.reverses,
    transfers.c.reversed_amount,
    transfers.c.reversed_fee,
    transfers.c.to_currency,
    transfers.c.fx_rate,
    transfers.c.converted_amount,
)


def to_transfer(row: Any) -> Transfer:
    return Transfer(
        id=row.id,
        kind=TransferKind(row.kind),
        sender_id=row.from_merchant_id,
        receiver_id=row.to_merchant_id,
        amount=row.amount,
        fee=row.fee,
        percent_fee=row.percent_fee,
        currency=row.currency,
        idempotency_key=row.idempotency_key,
        state=TransferState(row.state),
        failure_reason=row.failure_reason,
        created=row.created,
        processed=row.processed,
        reverses=row.reverses,
        reversed_amount=row.reversed_amount,
        reversed_fee=row.reversed_fee,
        to_currency=row.to_currency,
        fx_rate=row.fx_rate,
        converted_amount=row.converted_amount,
    )


def is_any(column: Any, values: list[Any], item_type: TypeEngine[Any]) -> ColumnElement[bool]:
    """`column = ANY(:values)`: one array parameter, however many values."""
    return column == any_(bindparam(None, values, type_=ARRAY(item_type)))  # type: ignore[no-any-return]
