"""Transfer use cases of the API: submit any kind (idempotently), read, list, wait for the
outcome. Every kind is recorded pending here and applied by a worker (`posting.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass

from shared.db.transfers import TransferRepository
from shared.domain.access import Actor
from shared.domain.errors import (
    Forbidden,
    InvariantViolation,
    LedgerError,
    TransferNotFound,
)
from shared.domain.transfers import (
    NewTransfer,
    ReversalRequest,
    Reversible,
    Transfer,
    TransferFilter,
    TransferKind,
    TransferRequest,
)
from shared.infra.database import Database
from shared.infra.notifications import FinalStateWaiter
from shared.services.pagination import decode_moment, encode_moment
from shared.services.recording import Asked, PendingRecorder

# While waiting for a final state, the database is re-read at least this often (a lost
# pub/sub notice then costs at most this much latency).
WAIT_POLL_S = 0.5
MAX_WAIT_S = 30


@dataclass(frozen=True, slots=True)
class Submission:
    transfer: Transfer
    replayed: bool


@dataclass(frozen=True, slots=True)
class TransferPage:
    transfers: list[Transfer]
    next_cursor: str | None


def authorize(actor: Actor, request: TransferRequest) -> None:
    """Deposits are the platform's (admin keys); a transfer or a withdrawal is its payer's."""
    if request.kind is TransferKind.DEPOSIT:
        actor.require_write()
        actor.require_admin()
    else:
        actor.require_acting_for(request.sender or "")


async def submit_transfer(
    db: Database,
    recorder: PendingRecorder,
    actor: Actor,
    request: TransferRequest,
    key: str,
    request_id: str | None,
) -> Submission:
    """Record a transfer, deposit or withdrawal as pending under its Idempotency-Key, then
    enqueue it.

    Keys are scoped by the key owner (a merchant's keys share one scope, admin keys the
    platform's). A key seen before in the scope returns its transfer (or refuses a different
    request); a refusal records nothing, so the key stays free. A new key costs the party lookup
    (with, across currencies, the rate) and a share of the group commit (`recording.py`), whose
    ON CONFLICT also detects a key seen before (or racing in parallel).
    """
    authorize(actor, request)
    scope = actor.idempotency_scope
    try:
        transfer = await recorder.submit(Asked(request, scope, key), request_id)
    except LedgerError:
        async with db.autocommit() as connection:
            replay = await _replay(TransferRepository(connection), scope, key, request)
        if replay is not None:
            return replay
        raise
    return await _submission(db, transfer, scope, key, request)


def new_reversal(
    actor: Actor,
    reversible: Reversible | None,
    request: ReversalRequest,
    scope: uuid.UUID | None,
    key: str,
    request_id: str | None,
) -> NewTransfer:
    """A pending reversal: from the original's receiver back to its sender, if the actor may
    (an admin, or a write key of the receiver) and something is left to reverse."""
    if reversible is None or not actor.sees_transfer(
        reversible.original.sender_id, reversible.original.receiver_id
    ):
        raise TransferNotFound(str(request.original_id))
    original = reversible.original
    if not actor.is_admin and actor.merchant_id != original.receiver_id:
        raise Forbidden()
    amount, fee = reversible.check(request)
    return NewTransfer(
        id=uuid.uuid4(),
        idempotency_scope=scope,
        idempotency_key=key,
        request_fingerprint=request.fingerprint(),
        sender_id=original.receiver_id,
        receiver_id=original.sender_id,
        amount=amount,
        fee=fee,
        percent_fee=original.percent_fee,
        currency=original.currency,
        request_id=request_id,
        kind=TransferKind.REVERSAL,
        reverses=original.id,
    )


async def submit_reversal(
    db: Database,
    recorder: PendingRecorder,
    actor: Actor,
    request: ReversalRequest,
    key: str,
    request_id: str | None,
) -> Submission:
    """Record a reversal of a completed transfer as pending, then enqueue it.

    What is left to reverse counts the pending reversals too; concurrent submissions may still
    both pass here, and the worker, under the original's lock, fails the one that no longer
    fits. Idempotency as for any transfer.
    """
    actor.require_write()
    scope = actor.idempotency_scope
    async with db.autocommit() as connection:
        repository = TransferRepository(connection)
        reversible = await repository.get_reversible(request.original_id)
        try:
            new = new_reversal(actor, reversible, request, scope, key, request_id)
        except LedgerError:
            if (replay := await _replay(repository, scope, key, request)) is not None:
                return replay
            raise
    transfer = await recorder.record(new, request_id)
    return await _submission(db, transfer, scope, key, request)


async def _replay(
    repository: TransferRepository,
    scope: uuid.UUID | None,
    key: str,
    request: TransferRequest | ReversalRequest,
) -> Submission | None:
    """The transfer a key already names, replayed for `request` (a different request under the
    key is refused). For a request refused now, a replay wins over the refusal (the merchant,
    the rate or the original may have changed since the first try)."""
    stored = await repository.get_by_key(scope, key)
    return None if stored is None else Submission(stored.replay(request), replayed=True)


async def _submission(
    db: Database,
    recorded: Transfer | None,
    scope: uuid.UUID | None,
    key: str,
    request: TransferRequest | ReversalRequest,
) -> Submission:
    """The transfer just recorded, or (None: the key was taken, earlier or by a concurrent
    request) the one its key names."""
    if recorded is not None:
        return Submission(recorded, replayed=False)
    async with db.autocommit() as connection:
        replay = await _replay(TransferRepository(connection), scope, key, request)
    if replay is None:  # Transfers are never deleted, so the winner must be visible.
        raise InvariantViolation(f"transfer with key {key} vanished")
    return replay


async def get_transfer(db: Database, actor: Actor, transfer_id: uuid.UUID) -> Transfer:
    """The transfer, if the actor may see it: to anyone else it does not exist."""
    async with db.autocommit() as connection:
        transfer = await TransferRepository(connection).get(transfer_id)
    if transfer is None or not actor.sees_transfer(transfer.sender_id, transfer.receiver_id):
        raise TransferNotFound(str(transfer_id))
    return transfer


async def wait_until_final(
    db: Database, actor: Actor, waiter: FinalStateWaiter, transfer: Transfer, timeout_s: float
) -> Transfer:
    """The transfer once final, or as it stands when `timeout_s` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout_s, MAX_WAIT_S)
    while not transfer.state.is_final:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        with waiter.expect(transfer.id) as notice:
            transfer = await get_transfer(db, actor, transfer.id)
            if transfer.state.is_final:
                break
            await asyncio.wait({notice}, timeout=min(remaining, WAIT_POLL_S))
    return transfer


async def list_transfers(
    db: Database, actor: Actor, where: TransferFilter, cursor: str | None, limit: int
) -> TransferPage:
    """Newest first (a merchant key sees only its merchant's); `next_cursor` continues after
    the last transfer of this page."""
    if not actor.is_admin:
        where = dataclasses.replace(where, party=actor.merchant_id)
    after = None if cursor is None else decode_moment(cursor)
    async with db.autocommit() as connection:
        rows = await TransferRepository(connection).list(where, after, limit + 1)
    page = rows[:limit]
    next_cursor = encode_moment(page[-1].created, page[-1].id) if len(rows) > limit else None
    return TransferPage(page, next_cursor)
