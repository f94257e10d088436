"""Applying a pending transfer (the worker's use case): locks outside, one transaction inside."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import structlog

from shared.db.database import SyncDatabase
from shared.db.ledger import (
    AccountState,
    GroupLedgerRepository,
    LedgerRepository,
    NewEntry,
)
from shared.domain.errors import InvariantViolation
from shared.domain.money import format_amount
from shared.domain.transfers import (
    BalanceKey,
    GroupOutcome,
    Transfer,
    fee_account_shard,
    plan_group,
    plan_postings,
)
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
    balances: list[BalanceKey] | None,
    *,
    lock_ttl_s: float,
    lock_wait_s: float,
) -> ApplyOutcome:
    """Move the money of a pending transfer, or fail it for insufficient funds; idempotent.

    Redis locks on both balances are taken first (sorted, bounded wait) and released only
    after the commit. Inside the transaction the transfer row and then both balance rows are
    locked in merchant id order; the rows, not Redis, are what make the funds check safe.
    `balances` (from the message) names the balances to lock; without it the transfer is read
    first to find them.
    """
    if balances is None:
        with db.transaction() as connection:
            found = LedgerRepository(connection).get_transfer(transfer_id)
        if found is None:
            return ApplyOutcome.NOT_FOUND
        if found.state.is_final:
            return ApplyOutcome.ALREADY_FINAL
        balances = list(_balance_keys(found))
    lock_names = [balance_lock_name(merchant_id, currency) for merchant_id, currency in balances]
    with locker.hold_all(lock_names, timeout_s=lock_ttl_s, wait_s=lock_wait_s) as held:
        if not held:
            return ApplyOutcome.LOCKS_BUSY
        with db.transaction() as connection:
            ledger = LedgerRepository(connection)
            transfer = ledger.get_transfer_for_update(transfer_id)
            if transfer is None:
                return ApplyOutcome.NOT_FOUND
            if transfer.state.is_final:
                return ApplyOutcome.ALREADY_FINAL
            locked = ledger.lock_balances(
                [transfer.from_merchant_id, transfer.to_merchant_id], transfer.currency
            )
            sender = locked.get(transfer.from_merchant_id)
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


def claim_stale_pending(db: SyncDatabase, older_than_s: float, limit: int) -> list[uuid.UUID]:
    """Pending transfers whose last enqueue is older than `older_than_s`, marked enqueued now."""
    with db.transaction() as connection:
        return LedgerRepository(connection).claim_stale_pending(older_than_s, limit)


@dataclass(frozen=True, slots=True)
class GroupResult:
    completed: list[uuid.UUID]
    failed: list[uuid.UUID]
    skipped: int  # final already, or being applied by another worker right now


def apply_group(db: SyncDatabase, transfer_ids: list[uuid.UUID]) -> GroupResult:
    """Apply many pending transfers in one transaction, in the order given; idempotent.

    No Redis locks: the group takes its rows directly in the one global order (transfers with
    SKIP LOCKED, then balances by merchant and currency, then fee shards), so it cannot deadlock
    with another group or a single transfer, and each transfer still fails or completes alone.
    """
    with db.transaction() as connection:
        GroupLedgerRepository(connection).open_receiver_balances(transfer_ids)
    with db.transaction() as connection:
        ledger = GroupLedgerRepository(connection)
        claimed = {t.id: t for t in ledger.claim_pending(transfer_ids)}
        ordered = [claimed[i] for i in dict.fromkeys(transfer_ids) if i in claimed]
        if not ordered:
            return GroupResult(completed=[], failed=[], skipped=len(transfer_ids))
        keys = [k for t in ordered for k in _balance_keys(t)]
        balances = ledger.lock_balance_set(keys)
        outcomes = plan_group(ordered, {key: state.amount for key, state in balances.items()})
        entries, fee_postings = _post_balances(outcomes, balances)
        entries += _post_fees(ledger, fee_postings)
        failed: dict[str, list[uuid.UUID]] = defaultdict(list)
        for outcome in outcomes:
            if outcome.plan.failure_reason is not None:
                failed[outcome.plan.failure_reason].append(outcome.transfer.id)
        completed = [o.transfer.id for o in outcomes if o.plan.failure_reason is None]
        touched = {entry.account_id for entry in entries}
        ledger.write_group(
            [state for state in balances.values() if state.id in touched],
            entries,
            completed,
            dict(failed),
        )
    log.info(
        "transfer group applied", completed=len(completed), failed=len(ordered) - len(completed)
    )
    return GroupResult(
        completed=completed,
        failed=[i for ids in failed.values() for i in ids],
        skipped=len(transfer_ids) - len(ordered),
    )


def drain_pending(db: SyncDatabase, transfer_id: uuid.UUID, limit: int) -> GroupResult:
    """Apply this transfer together with the oldest other pending ones, as one group.

    Under a backlog, one transaction for many transfers settles far more per second than one
    each; the messages of the transfers drained here find them final and cost little.
    """
    with db.transaction() as connection:
        others = GroupLedgerRepository(connection).oldest_pending(limit - 1)
    return apply_group(db, [transfer_id, *others])


def _balance_keys(transfer: Transfer) -> tuple[BalanceKey, BalanceKey]:
    return (
        (transfer.from_merchant_id, transfer.currency),
        (transfer.to_merchant_id, transfer.currency),
    )


def _post_balances(
    outcomes: list[GroupOutcome], balances: dict[BalanceKey, AccountState]
) -> tuple[list[NewEntry], dict[tuple[str, int], list[tuple[uuid.UUID, Decimal]]]]:
    """Move the locked balances entry by entry; collect each fee shard's credits in order."""
    entries: list[NewEntry] = []
    fees: dict[tuple[str, int], list[tuple[uuid.UUID, Decimal]]] = defaultdict(list)
    for outcome in outcomes:
        transfer = outcome.transfer
        for posting in outcome.plan.postings:
            if posting.role == "fee":
                shard = (transfer.currency, fee_account_shard(transfer.id))
                fees[shard].append((transfer.id, posting.amount))
                continue
            sender, receiver = _balance_keys(transfer)
            state = balances[sender if posting.role == "sender" else receiver]
            state.amount += posting.amount
            state.version += 1
            if state.amount < 0:
                raise InvariantViolation(f"transfer {transfer.id} would overdraw {state.id}")
            entries.append(
                NewEntry(transfer.id, state.id, posting.amount, state.amount, state.version)
            )
    return entries, fees


def _post_fees(
    ledger: GroupLedgerRepository, fees: dict[tuple[str, int], list[tuple[uuid.UUID, Decimal]]]
) -> list[NewEntry]:
    """Credit each shard once with its total, then replay its entries back from the result."""
    if not fees:
        return []
    totals = {
        shard: (sum((amount for _, amount in credits), Decimal(0)), len(credits))
        for shard, credits in fees.items()
    }
    after = ledger.credit_fee_shards(totals)
    entries = []
    for shard, credits in fees.items():
        state = after[shard]
        balance, version = state.amount, state.version
        for transfer_id, amount in reversed(credits):
            entries.append(NewEntry(transfer_id, state.id, amount, balance, version))
            balance -= amount
            version -= 1
    return entries
