"""Applying a pending transfer (the worker's use case): locks outside, one transaction inside."""

from __future__ import annotations

import uuid
from enum import StrEnum

import structlog

from shared.db.database import SyncDatabase
from shared.db.ledger import LedgerRepository, StaleTransfer
from shared.domain.errors import InvariantViolation
from shared.domain.money import format_amount
from shared.domain.transfers import fee_account_shard, plan_postings
from shared.locks import Locker, balance_lock_name

log = structlog.get_logger(__name__)


class ApplyOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    ALREADY_FINAL = "already_final"
    NOT_FOUND = "not_found"
    LOCKS_BUSY = "locks_busy"


def apply_transfer(
    db: SyncDatabase,
    locker: Locker,
    transfer_id: uuid.UUID,
    *,
    lock_ttl_s: float,
    lock_wait_s: float,
) -> ApplyOutcome:
    """Move the money of a pending transfer, or fail it for insufficient funds; idempotent.

    Redis locks on both balances are taken first (sorted, bounded wait) and released only
    after the commit. Inside the transaction the transfer row and then both balance rows are
    locked in merchant id order; the rows, not Redis, are what make the funds check safe.
    """
    with db.transaction() as connection:
        transfer = LedgerRepository(connection).get_transfer(transfer_id)
    if transfer is None:
        return ApplyOutcome.NOT_FOUND
    if transfer.state.is_final:
        return ApplyOutcome.ALREADY_FINAL
    lock_names = [
        balance_lock_name(transfer.from_merchant_id, transfer.currency),
        balance_lock_name(transfer.to_merchant_id, transfer.currency),
    ]
    with locker.hold_all(lock_names, timeout_s=lock_ttl_s, wait_s=lock_wait_s) as held:
        if not held:
            return ApplyOutcome.LOCKS_BUSY
        with db.transaction() as connection:
            ledger = LedgerRepository(connection)
            transfer = ledger.get_transfer_for_update(transfer_id)
            if transfer is None or transfer.state.is_final:
                return ApplyOutcome.ALREADY_FINAL
            balances = ledger.lock_balances(
                [transfer.from_merchant_id, transfer.to_merchant_id], transfer.currency
            )
            sender = balances.get(transfer.from_merchant_id)
            if sender is None:  # Checked at submission, and balances are never deleted.
                raise InvariantViolation(f"sender balance of transfer {transfer.id} is missing")
            plan = plan_postings(transfer, sender.amount)
            if plan.failure_reason is not None:
                ledger.fail_transfer(transfer.id, plan.failure_reason)
                log.info(
                    "transfer failed", transfer_id=str(transfer.id), reason=plan.failure_reason
                )
                return ApplyOutcome.FAILED
            ledger.post_transfer(transfer, sender.id, fee_account_shard(transfer.id))
    log.info(
        "transfer completed",
        transfer_id=str(transfer.id),
        amount=format_amount(transfer.amount),
        fee=format_amount(transfer.fee),
        currency=transfer.currency,
    )
    return ApplyOutcome.COMPLETED


def claim_stale_pending(db: SyncDatabase, older_than_s: float, limit: int) -> list[StaleTransfer]:
    """Pending transfers whose last enqueue is older than `older_than_s`, marked enqueued now."""
    with db.transaction() as connection:
        return LedgerRepository(connection).claim_stale_pending(older_than_s, limit)
