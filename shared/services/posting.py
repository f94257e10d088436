"""Applying pending transfers (the worker's use case): one path for one transfer or a thousand.

Every path — a single transfer behind its Redis locks, a drained backlog, a bulk group, the
groups the sweep re-enqueues — runs `apply_group`: one transaction claims the transfers, opens
and locks their accounts in the one global order, plans each transfer in order with the
domain's `Journal`, and writes the journal with one repository method.

A transfer whose planning raises (a bug, never a business refusal) is set aside without holding
back the others; a group whose write the database refuses is split until the offending transfer
stands alone. Such a transfer is retried with backoff and, after `MAX_APPLY_FAILURES` attempts,
fails with `APPLY_FAILED_REASON`, moving no money.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC

import structlog

from shared.db.ledger import LedgerRepository
from shared.domain.posting import Journal, accounts_touched, limited_debit
from shared.domain.transfers import Transfer, TransferState
from shared.infra import clock
from shared.infra.database import SyncDatabase, WriteRefused
from shared.infra.locks import Hold, Locker, balance_lock_name
from shared.infra.queue import GROUP_SIZE

log = structlog.get_logger(__name__)

MAX_APPLY_FAILURES = 5
# The sweep retries a transfer whose applying raised after this, doubled at every failure.
APPLY_RETRY_BACKOFF_S = 1.0
APPLY_FAILED_REASON = "Internal error: the transfer could not be applied"
# Messages waiting in the queue (each one submission, or an API process's group of them) from
# which a worker applies its message's transfers together with the oldest pending ones. At 50,
# a worker fell behind under `uniform` for seconds before draining; at 10 submit-to-final p99
# stayed 3-4x lower (docs/performance.md, round 11).
DRAIN_BACKLOG = 10


@dataclass(frozen=True, slots=True)
class GroupResult:
    # The transfers this group made final, as written.
    settled: list[Transfer] = field(default_factory=list)
    # Final already, or being applied by another worker right now.
    skipped: int = 0
    # Applying raised; they wait for another try (those that reached the bound are in `failed`).
    faulted: list[uuid.UUID] = field(default_factory=list)
    # The Redis locks stayed busy: nothing was tried; the caller tries again later.
    locks_busy: bool = False

    @property
    def completed(self) -> list[uuid.UUID]:
        return [t.id for t in self.settled if t.state is TransferState.COMPLETED]

    @property
    def failed(self) -> list[uuid.UUID]:
        return [t.id for t in self.settled if t.state is TransferState.FAILED]

    @property
    def final(self) -> list[uuid.UUID]:
        return [t.id for t in self.settled]

    def __add__(self, other: GroupResult) -> GroupResult:
        return GroupResult(
            self.settled + other.settled,
            self.skipped + other.skipped,
            self.faulted + other.faulted,
            self.locks_busy or other.locks_busy,
        )


def apply_group(db: SyncDatabase, transfer_ids: list[uuid.UUID]) -> GroupResult:
    """Apply the pending transfers among `transfer_ids`, in the order given; idempotent.

    Each transfer completes or fails on its own, seeing the balances the earlier ones left. A
    group the database refuses is split in halves, so the good transfers still settle.
    """
    try:
        return _apply_once(db, transfer_ids)
    except WriteRefused as error:
        if len(transfer_ids) == 1:
            log.error("transfer refused by the database", transfer_id=str(transfer_ids[0]))
            return _record_faults(db, transfer_ids, str(error))
        middle = len(transfer_ids) // 2
        log.warning("group refused by the database, splitting it", size=len(transfer_ids))
        return apply_group(db, transfer_ids[:middle]) + apply_group(db, transfer_ids[middle:])


def _apply_once(db: SyncDatabase, transfer_ids: list[uuid.UUID]) -> GroupResult:
    faults: dict[uuid.UUID, str] = {}
    with db.transaction() as connection:
        ledger = LedgerRepository(connection)
        claimed = {transfer.id: transfer for transfer in ledger.claim_pending(transfer_ids)}
        ordered = [claimed[i] for i in dict.fromkeys(transfer_ids) if i in claimed]
        originals = ledger.lock_originals([t.reverses for t in ordered if t.reverses is not None])
        keys = [key for transfer in ordered for key in accounts_touched(transfer)]
        opened = ledger.open_accounts(keys)
        accounts = ledger.lock_accounts(keys)
        # One reading for the group: its `processed` stamp and its limits' period agree.
        now = clock.utc_now()
        today = now.astimezone(UTC).date()
        limited = [debit[0] for t in ordered if (debit := limited_debit(t)) is not None]
        limits = ledger.read_limits(limited, today) if limited else {}
        journal = Journal(accounts, originals, today=today, limits=limits)
        for transfer in ordered:
            try:
                journal.apply(transfer)
            except Exception as error:  # A bug in one transfer's plan must not stall the rest.
                log.exception("transfer could not be planned", transfer_id=str(transfer.id))
                faults[transfer.id] = f"{type(error).__name__}: {error}"
        ledger.write_journal(journal, opened, now)
    result = GroupResult(
        settled=[plan.settle(claimed[plan.transfer_id]) for plan in journal.plans],
        skipped=len(transfer_ids) - len(ordered),
    )
    if faults:
        result += _record_faults(db, list(faults), "; ".join(faults.values()))
    return result


def _record_faults(db: SyncDatabase, transfer_ids: list[uuid.UUID], error: str) -> GroupResult:
    """Count a failed attempt on each transfer; fail (moving nothing) those at the bound."""
    with db.transaction() as connection:
        retrying, given_up = LedgerRepository(connection).record_apply_failures(
            transfer_ids,
            reason=APPLY_FAILED_REASON,
            max_failures=MAX_APPLY_FAILURES,
            backoff_s=APPLY_RETRY_BACKOFF_S,
        )
    for transfer in given_up:
        log.error(
            "transfer failed after repeated faults", transfer_id=str(transfer.id), error=error
        )
    return GroupResult(settled=given_up, faulted=retrying)


def apply_queued_transfers(
    db: SyncDatabase,
    locker: Locker,
    transfer_ids: list[uuid.UUID],
    balances: list[tuple[uuid.UUID, str]] | None,
    *,
    queue_depth: int,
    lock_ttl_s: float,
    lock_wait_s: float,
) -> GroupResult:
    """What one queued message does: apply its transfers as one group behind Redis locks on
    their balances, or, with a backlog of `DRAIN_BACKLOG` messages or more, together with the
    oldest pending transfers.

    A backlog drains many times faster in big groups (one transaction for many transfers), and
    the messages of transfers applied that way find them final and cost little.
    """
    if queue_depth >= DRAIN_BACKLOG:
        return drain_pending(db, transfer_ids, GROUP_SIZE)
    return apply_transfers(
        db, locker, transfer_ids, balances, lock_ttl_s=lock_ttl_s, lock_wait_s=lock_wait_s
    )


def apply_transfers(
    db: SyncDatabase,
    locker: Locker,
    transfer_ids: list[uuid.UUID],
    balances: list[tuple[uuid.UUID, str]] | None,
    *,
    lock_ttl_s: float,
    lock_wait_s: float,
) -> GroupResult:
    """Apply pending transfers as one group, behind Redis locks on their balances.

    The locks (all taken at once, bounded wait, released after the commit) keep workers from
    piling onto one balance; the row locks inside `apply_group` are what keep money correct.
    `balances` (from the message) names the balances to lock; without it the transfers are
    read first. `locks_busy` in the result: nothing was done, the caller tries again later.
    """
    if balances is None:
        with db.transaction() as connection:
            found = LedgerRepository(connection).get_transfers(transfer_ids)
        pending = [transfer for transfer in found if not transfer.state.is_final]
        if not pending:
            return GroupResult(skipped=len(transfer_ids))
        balances = [key for transfer in pending for key in transfer.balances]
    lock_names = [balance_lock_name(merchant_id, currency) for merchant_id, currency in balances]
    with locker.hold_all(lock_names, ttl_s=lock_ttl_s, wait_s=lock_wait_s) as hold:
        # Without Redis (UNAVAILABLE) the row locks alone serialise the balances: carry on.
        if hold is Hold.BUSY:
            return GroupResult(locks_busy=True)
        return apply_group(db, transfer_ids)


def drain_pending(db: SyncDatabase, transfer_ids: list[uuid.UUID], limit: int) -> GroupResult:
    """Apply these transfers together with the oldest other pending ones, as one group.

    Under a backlog, one transaction for many transfers settles far more per second than one
    each; the messages of the transfers drained here find them final and cost little.
    """
    with db.transaction() as connection:
        others = LedgerRepository(connection).oldest_pending(max(limit - len(transfer_ids), 0))
    return apply_group(db, [*transfer_ids, *others])


def claim_stale_pending(db: SyncDatabase, older_than_s: float, limit: int) -> list[uuid.UUID]:
    """Pending transfers whose last enqueue is older than `older_than_s`, marked enqueued now."""
    with db.transaction() as connection:
        return LedgerRepository(connection).claim_stale_pending(older_than_s, limit)
