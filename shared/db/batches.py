"""Batch records and their progress (async, for the API)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import batch_items, batches, transfers
from shared.domain.batches import BatchProgress


class BatchRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def insert(
        self,
        batch_id: uuid.UUID,
        owner_merchant_id: uuid.UUID | None,
        accepted: int,
        refused: int,
        items: list[uuid.UUID],
    ) -> None:
        """The batch and, in order, the transfer each accepted item stands for."""
        await self._connection.execute(
            batches.insert().values(
                id=batch_id,
                owner_merchant_id=owner_merchant_id,
                accepted=accepted,
                refused=refused,
            )
        )
        if items:
            await self._connection.execute(
                text(
                    """
                    INSERT INTO batch_items (batch_id, position, transfer_id)
                    SELECT :batch_id, position - 1, transfer_id
                    FROM unnest(CAST(:transfer_ids AS uuid[])) WITH ORDINALITY
                        AS item (transfer_id, position)
                    """
                ),
                {"batch_id": batch_id, "transfer_ids": items},
            )

    async def get_progress(self, batch_id: uuid.UUID) -> BatchProgress | None:
        batch = (
            await self._connection.execute(select(*batches.c).where(batches.c.id == batch_id))
        ).one_or_none()
        if batch is None:
            return None
        states = await self._connection.execute(
            select(transfers.c.state, func.count())
            .select_from(batch_items.join(transfers, transfers.c.id == batch_items.c.transfer_id))
            .where(batch_items.c.batch_id == batch_id)
            .group_by(transfers.c.state)
        )
        counts = {state: int(count) for state, count in states}
        return BatchProgress(
            id=batch.id,
            owner_merchant_id=batch.owner_merchant_id,
            created=batch.created,
            accepted=batch.accepted,
            refused=batch.refused,
            pending=counts.get("pending", 0),
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
        )
