"""Transfer use cases of the API: submit (idempotently), read, list, wait for the outcome."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime

from shared.db.transfers import TransferRepository
from shared.domain.access import Actor
from shared.domain.errors import (
    BalanceNotFound,
    InvalidCursor,
    InvariantViolation,
    LedgerError,
    MerchantArchived,
    TransferNotFound,
    TransferPartiesNotFound,
)
from shared.domain.money import compute_fee
from shared.domain.transfers import (
    NewTransfer,
    Party,
    Transfer,
    TransferFilter,
    TransferRequest,
)
from shared.infra.database import Database
from shared.infra.notifications import FinalStateWaiter
from shared.infra.queue import publish_transfers

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


def check_parties(parties: dict[str, Party], request: TransferRequest) -> tuple[Party, Party]:
    """The submission-time rules that need no lock (SPEC: Transfer lifecycle, step 1)."""
    sender = parties.get(request.sender)
    receiver = parties.get(request.receiver)
    if sender is None or receiver is None:
        raise TransferPartiesNotFound()
    for party in (sender, receiver):
        if party.archived:
            raise MerchantArchived(party.name)
    if request.currency not in sender.balance_ids:
        raise BalanceNotFound(request.currency)
    return sender, receiver


def new_transfer(
    request: TransferRequest,
    scope: uuid.UUID | None,
    key: str,
    sender: Party,
    receiver: Party,
    request_id: str | None,
) -> NewTransfer:
    """A pending transfer with the fee snapshotted from the sender's fee at submission."""
    return NewTransfer(
        id=uuid.uuid4(),
        idempotency_scope=scope,
        idempotency_key=key,
        request_fingerprint=request.fingerprint(),
        sender_id=sender.merchant_id,
        receiver_id=receiver.merchant_id,
        amount=request.amount,
        fee=compute_fee(request.amount, sender.percent_fee),
        percent_fee=sender.percent_fee,
        currency=request.currency,
        request_id=request_id,
    )


async def submit_transfer(
    db: Database, actor: Actor, request: TransferRequest, key: str, request_id: str | None
) -> Submission:
    """Record the transfer as pending under its Idempotency-Key, then enqueue it.

    Keys are scoped by the key owner (a merchant's keys share one scope, admin keys the
    platform's). A key seen before in the scope returns its transfer (or refuses a different
    request); a refusal records nothing, so the key stays free. A new key costs two statements:
    the party lookup and the insert, whose ON CONFLICT also detects a key seen before (or racing
    in parallel).
    """
    actor.require_acting_for(request.sender)
    scope = actor.idempotency_scope
    # The insert is the only write and a single statement, so no explicit transaction.
    async with db.autocommit() as connection:
        repository = TransferRepository(connection)
        names = [request.sender, request.receiver]
        parties = await repository.get_parties(names, [request.currency])
        try:
            sender, receiver = check_parties(parties, request)
        except LedgerError:
            # A replay wins over a refusal: the merchant may have changed since the first try.
            if (stored := await repository.get_by_key(scope, key)) is not None:
                return Submission(stored.replay(request), replayed=True)
            raise
        transfer = await repository.insert_pending(
            new_transfer(request, scope, key, sender, receiver, request_id)
        )
        if transfer is None:  # The key was taken, earlier or by a concurrent request.
            stored = await repository.get_by_key(scope, key)
            if stored is None:  # Transfers are never deleted, so the winner must be visible.
                raise InvariantViolation(f"transfer with key {key} vanished")
            return Submission(stored.replay(request), replayed=True)
    await asyncio.to_thread(publish_transfers, [transfer], request_id)
    return Submission(transfer, replayed=False)


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


def encode_cursor(transfer: Transfer) -> str:
    raw = f"{transfer.created.isoformat()}|{transfer.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, transfer_id = raw.split("|")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive cursor timestamp")
        return moment, uuid.UUID(transfer_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidCursor() from error


async def list_transfers(
    db: Database, actor: Actor, where: TransferFilter, cursor: str | None, limit: int
) -> TransferPage:
    """Newest first (a merchant key sees only its merchant's); `next_cursor` continues after
    the last transfer of this page."""
    if not actor.is_admin:
        where = dataclasses.replace(where, party=actor.merchant_id)
    after = None if cursor is None else decode_cursor(cursor)
    async with db.autocommit() as connection:
        rows = await TransferRepository(connection).list(where, after, limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
    return TransferPage(page, next_cursor)
