"""What the operator console reads that the API's own repositories do not: merchants by name
fragment, names for ids, a transfer's trace (request id, last enqueue, batches, reversals), the
ledger's recent activity, and batches newest first (async, for the API process)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, true, tuple_
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.columns import TRANSFER_COLUMNS, is_any, to_transfer
from shared.db.merchants import to_merchant
from shared.db.tables import batch_items, batches, merchants, transfers
from shared.domain.batches import BatchProgress
from shared.domain.merchants import Merchant
from shared.domain.transfers import Transfer, TransferState

_MERCHANT_COLUMNS = (
    merchants.c.id,
    merchants.c.name,
    merchants.c.percent_fee,
    merchants.c.created,
    merchants.c.updated,
    merchants.c.archived,
    merchants.c.fee_tiers,
)
# A transfer is in a batch once, but a replayed item names it in a later batch too.
MAX_BATCHES_SHOWN = 10


def _like_pattern(fragment: str) -> str:
    """`%fragment%` for ILIKE, with its own wildcards taken literally."""
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ConsoleRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def search_merchants(
        self, fragment: str | None, after_name: str | None, limit: int
    ) -> list[Merchant]:
        """Merchants whose name contains `fragment` (any case), by name, after `after_name`."""
        statement = select(*_MERCHANT_COLUMNS).order_by(merchants.c.name).limit(limit)
        if fragment:
            statement = statement.where(
                merchants.c.name.ilike(_like_pattern(fragment), escape="\\")
            )
        if after_name is not None:
            statement = statement.where(merchants.c.name > after_name)
        return [to_merchant(row) for row in await self._connection.execute(statement)]

    async def merchant_names(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not ids:
            return {}
        statement = select(merchants.c.id, merchants.c.name).where(
            is_any(merchants.c.id, ids, UUID(as_uuid=True))
        )
        return {row.id: row.name for row in await self._connection.execute(statement)}

    async def get_transfers(self, ids: list[uuid.UUID]) -> list[Transfer]:
        if not ids:
            return []
        statement = select(*TRANSFER_COLUMNS).where(is_any(transfers.c.id, ids, UUID(as_uuid=True)))
        return [to_transfer(row) for row in await self._connection.execute(statement)]

    async def get_trace(self, transfer_id: uuid.UUID) -> tuple[str | None, datetime] | None:
        """The submission's request id and when the transfer was last handed to the queue."""
        statement = select(transfers.c.request_id, transfers.c.enqueued).where(
            transfers.c.id == transfer_id
        )
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else (row.request_id, row.enqueued)

    async def batches_of(self, transfer_id: uuid.UUID) -> list[uuid.UUID]:
        statement = (
            select(batch_items.c.batch_id, func.min(batches.c.created).label("created"))
            .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
            .where(batch_items.c.transfer_id == transfer_id)
            .group_by(batch_items.c.batch_id)
            .order_by(func.min(batches.c.created))
            .limit(MAX_BATCHES_SHOWN)
        )
        return [row.batch_id for row in await self._connection.execute(statement)]

    async def reversals_of(self, transfer_id: uuid.UUID) -> list[Transfer]:
        """A transfer's reversals, oldest first (on the partial index of reversals)."""
        statement = (
            select(*TRANSFER_COLUMNS)
            .where(transfers.c.reverses == transfer_id)
            .order_by(transfers.c.created, transfers.c.id)
        )
        return [to_transfer(row) for row in await self._connection.execute(statement)]

    async def settled_since(self, moment: datetime) -> int:
        """Transfers that reached a final state at `moment` or later."""
        statement = select(func.count()).where(transfers.c.processed >= moment)
        return int((await self._connection.execute(statement)).scalar_one())

    async def failures_by_reason(self, since: datetime) -> list[tuple[str, int, int]]:
        """(reason, failed since `since`, failed ever), most frequent first."""
        recent = func.count().filter(transfers.c.processed >= since)
        statement = (
            select(transfers.c.failure_reason, recent.label("recent"), func.count().label("total"))
            .where(transfers.c.state == TransferState.FAILED.value)
            .group_by(transfers.c.failure_reason)
            .order_by(func.count().desc(), transfers.c.failure_reason)
        )
        return [
            (str(row.failure_reason), int(row.recent), int(row.total))
            for row in await self._connection.execute(statement)
        ]

    async def list_batches(
        self, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[BatchProgress]:
        """Batches newest first (ties by id), each with its accepted transfers' states."""
        state_counts = (
            select(
                func.count().filter(transfers.c.state == "pending").label("pending"),
                func.count().filter(transfers.c.state == "completed").label("completed"),
                func.count().filter(transfers.c.state == "failed").label("failed"),
            )
            .select_from(batch_items.join(transfers, transfers.c.id == batch_items.c.transfer_id))
            .where(batch_items.c.batch_id == batches.c.id)
            .lateral("counts")
        )
        statement = (
            select(
                *batches.c, state_counts.c.pending, state_counts.c.completed, state_counts.c.failed
            )
            .select_from(batches.join(state_counts, true()))
            .order_by(batches.c.created.desc(), batches.c.id.desc())
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(tuple_(batches.c.created, batches.c.id) < tuple_(*after))
        return [
            BatchProgress(
                id=row.id,
                owner_merchant_id=row.owner_merchant_id,
                created=row.created,
                accepted=row.accepted,
                refused=row.refused,
                pending=int(row.pending),
                completed=int(row.completed),
                failed=int(row.failed),
            )
            for row in await self._connection.execute(statement)
        ]
