"""Bulk submission: many transfers in one request, each with the rules of a single one.

Items are accepted one by one (never all-or-nothing), and the accepted ones are recorded in
one transaction with one multi-row insert, then enqueued in groups a worker applies together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass

from shared.db.batches import BatchRepository
from shared.db.transfers import TransferRepository
from shared.domain.access import Actor
from shared.domain.batches import BatchProgress
from shared.domain.errors import BatchNotFound, BatchTooLarge, IdempotencyKeyReused, LedgerError
from shared.domain.submissions import Counterparties, PartiesWanted
from shared.domain.transfers import (
    NewTransfer,
    StoredTransfer,
    Transfer,
    TransferRequest,
)
from shared.infra import clock
from shared.infra.database import Database
from shared.infra.queue import publish_transfer_groups
from shared.services.operations import count_submitted
from shared.services.transfers import authorize

MAX_BATCH_ITEMS = 10_000


@dataclass(frozen=True, slots=True)
class BatchItem:
    """A valid item: its position in the request, its key, and what it asks for."""

    index: int
    key: str
    request: TransferRequest


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    transfer: Transfer | None = None
    error: LedgerError | None = None


@dataclass(frozen=True, slots=True)
class BatchSubmission:
    id: uuid.UUID
    accepted: int
    refused: int
    results: list[ItemResult]


class _BatchPlan:
    """What each item becomes, decided in request order; new transfers resolve after insert."""

    def __init__(
        self,
        actor: Actor,
        stored: dict[str, StoredTransfer],
        counterparties: Counterparties,
    ) -> None:
        self._actor = actor
        self._stored = stored
        self._counterparties = counterparties
        self._decided: dict[int, ItemResult] = {}
        self._first_by_key: dict[str, BatchItem] = {}
        self._followers: dict[int, int] = {}  # a repeated key's item -> the first item with it
        self.new: dict[str, NewTransfer] = {}
        self._new_items: dict[str, BatchItem] = {}

    def add(self, item: BatchItem, request_id: str | None) -> None:
        try:
            authorize(self._actor, item.request)
        except LedgerError as error:
            self._refuse(item, error)
            return
        first = self._first_by_key.setdefault(item.key, item)
        if first is not item:  # The same key earlier in this batch: it answers for both.
            if first.request.fingerprint() != item.request.fingerprint():
                self._refuse(item, IdempotencyKeyReused(item.key))
            else:
                self._followers[item.index] = first.index
        elif item.key in self._stored:
            self._decided[item.index] = _replay(item, self._stored[item.key])
        else:
            try:
                self.new[item.key] = self._counterparties.new_transfer(
                    item.request, self._actor.idempotency_scope, item.key, request_id
                )
            except LedgerError as error:
                self._refuse(item, error)
                return
            self._new_items[item.key] = item

    def _refuse(self, item: BatchItem, error: LedgerError) -> None:
        self._decided[item.index] = ItemResult(item.index, error=error)

    def resolve(
        self,
        items: list[BatchItem],
        created: dict[str, Transfer],
        winners: dict[str, StoredTransfer],
    ) -> list[ItemResult]:
        """Every item's result: created, or replayed from a concurrent winner of its key."""
        for key, item in self._new_items.items():
            if key in created:
                self._decided[item.index] = ItemResult(item.index, transfer=created[key])
            else:
                self._decided[item.index] = _replay(item, winners[key])
        results = []
        for item in items:
            source = self._decided[self._followers.get(item.index, item.index)]
            results.append(ItemResult(item.index, source.transfer, source.error))
        return results


def _replay(item: BatchItem, stored: StoredTransfer) -> ItemResult:
    try:
        return ItemResult(item.index, transfer=stored.replay(item.request))
    except IdempotencyKeyReused as error:
        return ItemResult(item.index, error=error)


async def submit_batch(
    db: Database,
    actor: Actor,
    items: list[BatchItem],
    invalid_items: int,
    request_id: str | None,
) -> BatchSubmission:
    """Validate and record every item as `POST /transfers` would, in one transaction.

    `invalid_items` counts the items the caller already refused (malformed); they are part of
    the batch's `refused` count. Returns one result per valid item, in request order.
    """
    if len(items) + invalid_items > MAX_BATCH_ITEMS:
        raise BatchTooLarge(MAX_BATCH_ITEMS)
    batch_id = uuid.uuid4()
    scope = actor.idempotency_scope
    async with db.transaction() as connection:
        repository = TransferRepository(connection)
        wanted = PartiesWanted.of([item.request for item in items], clock.utc_now())
        plan = _BatchPlan(
            actor,
            stored=await repository.get_by_keys(scope, list({item.key for item in items})),
            counterparties=await repository.get_counterparties(wanted),
        )
        for item in items:
            plan.add(item, request_id)
        inserted = await repository.insert_pending_many(list(plan.new.values()))
        created = {key: inserted[new.id] for key, new in plan.new.items() if new.id in inserted}
        lost_races = [key for key in plan.new if key not in created]
        winners = await repository.get_by_keys(scope, lost_races) if lost_races else {}
        results = plan.resolve(items, created, winners)
        accepted = [result.transfer.id for result in results if result.transfer is not None]
        refused = invalid_items + len(results) - len(accepted)
        await BatchRepository(connection).insert(
            batch_id, actor.merchant_id, len(accepted), refused, accepted
        )
    to_apply = [created[key].id for key in plan.new if key in created]
    for kind, count in Counter(created[key].kind for key in plan.new if key in created).items():
        count_submitted(kind, count)
    await asyncio.to_thread(publish_transfer_groups, to_apply, batch_id, request_id)
    return BatchSubmission(batch_id, len(accepted), refused, results)


async def get_batch(db: Database, actor: Actor, batch_id: uuid.UUID) -> BatchProgress:
    """A batch's progress, if the actor's merchant (or an admin) created it."""
    async with db.autocommit() as connection:
        progress = await BatchRepository(connection).get_progress(batch_id)
    if progress is None or not (actor.is_admin or progress.owner_merchant_id == actor.merchant_id):
        raise BatchNotFound(str(batch_id))
    return progress
