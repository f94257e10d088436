"""The operator console's reads: each page's data in one call, built on the API's own services
(the same authorization, the same rules) plus the few reads only an operator needs
(`shared/db/console.py`). Writes go through the API's services unchanged."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.db.api_keys import ApiKeyRepository
from shared.db.console import ConsoleRepository
from shared.domain.access import Actor
from shared.domain.batches import BatchProgress
from shared.domain.errors import (
    DependencyUnavailable,
    InvariantViolation,
    Unauthenticated,
)
from shared.domain.merchants import Merchant, MerchantWithBalances
from shared.domain.statements import Statement, Window
from shared.domain.transfers import Transfer, TransferFilter
from shared.infra.database import Database
from shared.services.audit import AuditReport, audit
from shared.services.merchants import get_merchant
from shared.services.operations import QueueStatus, last_audit_report, queue_status
from shared.services.pagination import decode_moment, decode_text, encode_moment, encode_text
from shared.services.statements import get_statement
from shared.services.transfers import get_transfer, list_transfers

# The key that signs console sessions: made once, shared by every API process through Redis.
SESSION_SECRET_KEY = "mini-ledger:console:session-secret"
SESSION_SECRET_BYTES = 32
REDIS_TIMEOUT_S = 1.0
RECENT_TRANSFERS = 10
FAILURES_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class FailureCount:
    reason: str
    last_hour: int
    total: int


@dataclass(frozen=True, slots=True)
class Overview:
    queue: QueueStatus
    settled_last_minute: int
    failures: list[FailureCount]
    last_audit: dict[str, Any] | None
    recent: list[Transfer]
    names: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class MerchantPage:
    merchants: list[Merchant]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class MerchantView:
    merchant: MerchantWithBalances
    statement: Statement | None  # None: the merchant has no balance yet
    transfers: dict[uuid.UUID, Transfer]  # what moved each entry of the statement's page
    names: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class TransferListView:
    transfers: list[Transfer]
    next_cursor: str | None
    names: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class TransferView:
    transfer: Transfer
    request_id: str | None
    enqueued: datetime
    batch_ids: list[uuid.UUID]
    reversals: list[Transfer]
    original: Transfer | None  # what a reversal gives back
    names: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class BatchPage:
    batches: list[BatchProgress]
    next_cursor: str | None


async def authenticate_session(db: Database, secret_hash: str) -> Actor:
    """The owner of the live key a console session was opened with (the session keeps the
    key's hash, never its secret); Unauthenticated once the key is revoked."""
    async with db.autocommit() as connection:
        actor = await ApiKeyRepository(connection).get_actor(secret_hash)
    if actor is None:
        raise Unauthenticated()
    return actor


async def session_secret(redis: Redis) -> str:
    """The secret that signs console sessions: made by the first API process that needs it and
    read by every other, so a session is valid on every process of every machine."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            fresh = secrets.token_urlsafe(SESSION_SECRET_BYTES)
            await redis.set(SESSION_SECRET_KEY, fresh, nx=True)
            stored = await redis.get(SESSION_SECRET_KEY)
    except (RedisError, OSError, TimeoutError) as error:
        raise DependencyUnavailable("Redis is unavailable, try again later") from error
    if stored is None:  # Flushed between the two commands: this process's fresh one will do.
        return fresh
    return stored.decode() if isinstance(stored, bytes) else str(stored)


async def _names(db: Database, transfers: list[Transfer]) -> dict[uuid.UUID, str]:
    ids = list({merchant for transfer in transfers for merchant in transfer.merchant_ids})
    async with db.autocommit() as connection:
        return await ConsoleRepository(connection).merchant_names(ids)


async def overview(db: Database, actor: Actor, redis: Redis) -> Overview:
    """The queue, what settled in the last minute, failures by reason, the last audit and the
    latest transfers."""
    status = await queue_status(db, actor, redis)
    now = datetime.now(UTC)
    async with db.autocommit() as connection:
        repository = ConsoleRepository(connection)
        settled = await repository.settled_since(now - timedelta(minutes=1))
        failures = [
            FailureCount(reason, recent, total)
            for reason, recent, total in await repository.failures_by_reason(now - FAILURES_WINDOW)
        ]
    recent = (await list_transfers(db, actor, TransferFilter(), None, RECENT_TRANSFERS)).transfers
    return Overview(
        status, settled, failures, await last_audit_report(redis), recent, await _names(db, recent)
    )


async def run_audit(db: Database, actor: Actor, redis: Redis) -> AuditReport:
    """Check every invariant now (admin); the outcome becomes the last audit."""
    return await audit(db, actor, redis)


async def search_merchants(
    db: Database, actor: Actor, fragment: str | None, cursor: str | None, limit: int
) -> MerchantPage:
    """Merchants whose name contains `fragment` (any case), by name; `cursor` continues."""
    actor.require_admin()
    after = None if cursor is None else decode_text(cursor)
    async with db.autocommit() as connection:
        found = await ConsoleRepository(connection).search_merchants(fragment, after, limit + 1)
    page = found[:limit]
    return MerchantPage(page, encode_text(page[-1].name) if len(found) > limit else None)


async def merchant_view(
    db: Database,
    actor: Actor,
    name: str,
    currency: str | None,
    window: Window,
    cursor: str | None,
    limit: int,
) -> MerchantView:
    """A merchant with its balances and one page of the statement of `currency` (default: its
    first balance's)."""
    actor.require_admin()
    merchant = await get_merchant(db, actor, name)
    if currency is None and merchant.balances:
        currency = merchant.balances[0].currency
    if currency is None:
        return MerchantView(merchant, None, {}, {})
    statement = await get_statement(db, actor, name, currency, window, cursor, limit)
    ids = [entry.transfer_id for entry in statement.entries if entry.transfer_id is not None]
    async with db.autocommit() as connection:
        moved = await ConsoleRepository(connection).get_transfers(ids)
    by_id = {transfer.id: transfer for transfer in moved}
    return MerchantView(merchant, statement, by_id, await _names(db, moved))


async def transfer_list(
    db: Database, actor: Actor, where: TransferFilter, cursor: str | None, limit: int
) -> TransferListView:
    actor.require_admin()
    page = await list_transfers(db, actor, where, cursor, limit)
    return TransferListView(page.transfers, page.next_cursor, await _names(db, page.transfers))


async def transfer_view(db: Database, actor: Actor, transfer_id: uuid.UUID) -> TransferView:
    """A transfer with its trace: request id, last enqueue, batches, reversals, original."""
    actor.require_admin()
    transfer = await get_transfer(db, actor, transfer_id)
    original = None
    if transfer.reverses is not None:
        original = await get_transfer(db, actor, transfer.reverses)
    async with db.autocommit() as connection:
        repository = ConsoleRepository(connection)
        trace = await repository.get_trace(transfer_id)
        batch_ids = await repository.batches_of(transfer_id)
        reversals = await repository.reversals_of(transfer_id)
    if trace is None:  # Transfers are never deleted: it was just read.
        raise InvariantViolation(f"transfer {transfer_id} vanished")
    related = [transfer, *reversals, *([original] if original else [])]
    return TransferView(
        transfer, trace[0], trace[1], batch_ids, reversals, original, await _names(db, related)
    )


async def list_batches(db: Database, actor: Actor, cursor: str | None, limit: int) -> BatchPage:
    """Batches newest first with their progress; `cursor` continues."""
    actor.require_admin()
    after = None if cursor is None else decode_moment(cursor)
    async with db.autocommit() as connection:
        found = await ConsoleRepository(connection).list_batches(after, limit + 1)
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        next_cursor = encode_moment(page[-1].created, page[-1].id)
    return BatchPage(page, next_cursor)
