"""Plain async helpers that drive the API like a client would, and the ledger check."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import text

from shared.db.transfers import TransferRepository
from shared.domain.submissions import PartiesWanted
from shared.domain.transfers import NewTransfer, TransferRequest
from shared.infra.clock import utc_now
from shared.infra.database import Database, SyncDatabase
from shared.infra.queue import TRANSFERS_QUEUE
from shared.services.audit import audit_ledger

SETTLE_TIMEOUT_S = 90


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_merchant(
    client: httpx.AsyncClient, percent_fee: str = "0", name: str | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/merchants", json={"name": name or unique(), "percent_fee": percent_fee}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def open_balance(
    client: httpx.AsyncClient, merchant_id: str, currency: str, amount: str
) -> dict[str, Any]:
    response = await client.post(
        "/merchants/balance",
        json={"merchant_id": merchant_id, "currency": currency, "initial_amount": amount},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def funded_merchant(
    client: httpx.AsyncClient, amount: str, currency: str = "USD", percent_fee: str = "0"
) -> dict[str, Any]:
    merchant = await create_merchant(client, percent_fee)
    await open_balance(client, merchant["id"], currency, amount)
    return merchant


async def submit(
    client: httpx.AsyncClient,
    sender: str,
    receiver: str,
    amount: Any,
    currency: str = "USD",
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/transfers",
        json={
            "from_merchant": sender,
            "to_merchant": receiver,
            "amount": amount,
            "currency": currency,
        },
        headers={"Idempotency-Key": key or unique("key"), **(headers or {})},
    )


async def settle(client: httpx.AsyncClient, transfer_ids: list[str]) -> list[dict[str, Any]]:
    """Poll until every transfer is final; fail the test if one stays pending too long."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    final: dict[str, dict[str, Any]] = {}
    while len(final) < len(transfer_ids):
        for transfer_id in transfer_ids:
            if transfer_id in final:
                continue
            response = await client.get(f"/transfers/{transfer_id}")
            assert response.status_code == 200, response.text
            transfer = response.json()["result"]
            if transfer["state"] != "pending":
                final[transfer_id] = transfer
        if len(final) < len(transfer_ids):
            assert time.monotonic() < deadline, f"{len(transfer_ids) - len(final)} still pending"
            await asyncio.sleep(0.1)
    return [final[transfer_id] for transfer_id in transfer_ids]


async def balance_of(client: httpx.AsyncClient, name: str, currency: str = "USD") -> Decimal | None:
    response = await client.get(f"/merchants/{name}/balance")
    assert response.status_code == 200, response.text
    for balance in response.json()["result"]:
        if balance["currency"] == currency:
            return Decimal(balance["amount"])
    return None


def archive(db: SyncDatabase, merchant_id: str) -> None:
    """Archive a merchant the way an operator does today: in the database."""
    with db.transaction() as connection:
        connection.execute(
            text("UPDATE merchants SET archived = true WHERE id = :id"), {"id": merchant_id}
        )


async def queue_drained(redis_url: str) -> None:
    """Wait until every message handed to the workers has been taken and acknowledged."""
    client = AsyncRedis.from_url(redis_url)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    try:
        # kombu keeps a taken message in `unacked` until its task returns (late acks).
        while await client.llen(TRANSFERS_QUEUE) or await client.hlen("unacked"):
            assert time.monotonic() < deadline, "messages still waiting"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def count(db: SyncDatabase, sql: str, **params: Any) -> int:
    """One `SELECT count(*) ...`, read straight from the database."""
    with db.transaction() as connection:
        return int(connection.execute(text(sql), params).scalar_one())


def assert_ledger_consistent(db: SyncDatabase) -> None:
    report = audit_ledger(db)
    assert report.ok, report.violations


async def record_pending(
    database: Database, requests: list[tuple[str, str, Decimal]], currency: str = "USD"
) -> list[NewTransfer]:
    """Record transfers as pending, in order, never enqueued: only the test applies them."""
    asked = [
        TransferRequest(sender, receiver, amount, currency) for sender, receiver, amount in requests
    ]
    async with database.transaction() as connection:
        repository = TransferRepository(connection)
        counterparties = await repository.get_counterparties(PartiesWanted.of(asked, utc_now()))
        # The platform's idempotency scope (None).
        pending = [counterparties.new_transfer(a, None, unique("pending"), None) for a in asked]
        await repository.insert_pending_many(pending)
    return pending
