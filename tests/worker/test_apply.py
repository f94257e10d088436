"""Applying transfers: idempotent under redelivery, patient with busy locks."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
from fastapi import FastAPI
from redis import Redis

from shared.domain.access import OPERATOR
from shared.infra.config import load_settings
from shared.infra.database import SyncDatabase
from shared.infra.locks import Hold, Locker, balance_lock_name
from shared.infra.queue import GROUP_SIZE, TransferPublisher
from shared.services.posting import apply_transfers, drain_pending
from shared.services.transfers import get_transfer
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    count,
    create_merchant,
    funded_merchant,
    queue_drained,
    record_pending,
    settle,
    submit,
)


def _entry_count(db: SyncDatabase, transfer_id: str) -> int:
    return count(db, "SELECT count(*) FROM entries WHERE transfer_id = :id", id=transfer_id)


class TestRedelivery:
    async def test_applying_a_final_transfer_again_changes_nothing(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "100", percent_fee="1")
        receiver = await create_merchant(client)
        response = await submit(client, sender["name"], receiver["name"], "10")
        transfer_id = response.json()["result"]["id"]
        await settle(client, [transfer_id])
        assert _entry_count(sync_db, transfer_id) == 3
        redis = Redis.from_url(load_settings().redis_url)
        result = apply_transfers(
            sync_db, Locker(redis), [uuid.UUID(transfer_id)], None, lock_ttl_s=5, lock_wait_s=1
        )
        redis.close()
        assert result.skipped == 1 and not result.final
        assert _entry_count(sync_db, transfer_id) == 3

    async def test_duplicate_messages_apply_once(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase, app: FastAPI
    ) -> None:
        database = app.state.database
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        response = await submit(client, sender["name"], receiver["name"], "10")
        transfer_id = response.json()["result"]["id"]
        transfer = await get_transfer(database, OPERATOR, uuid.UUID(transfer_id))
        publisher = TransferPublisher(load_settings().redis_url)
        for _ in range(10):
            await publisher.publish_transfers([(transfer, None)])
        await publisher.aclose()
        await settle(client, [transfer_id])
        await queue_drained(load_settings().redis_url)  # every duplicate has run too
        assert _entry_count(sync_db, transfer_id) == 2
        assert await balance_of(client, sender["name"]) == 90
        assert_ledger_consistent(sync_db)


class TestBusyLocks:
    async def test_a_long_held_lock_delays_but_never_fails_a_transfer(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        redis = Redis.from_url(load_settings().redis_url)
        name = balance_lock_name(uuid.UUID(sender["id"]), "USD")
        with Locker(redis).hold_all([name], ttl_s=30, wait_s=1) as held:
            assert held is Hold.HELD
            response = await submit(client, sender["name"], receiver["name"], "10")
            transfer_id = response.json()["result"]["id"]
            await asyncio.sleep(2.5)  # several lock waits and retries happen meanwhile
            still = (await client.get(f"/transfers/{transfer_id}")).json()["result"]
            assert still["state"] == "pending"
        redis.close()
        (final,) = await settle(client, [transfer_id])
        assert final["state"] == "completed"
        assert_ledger_consistent(sync_db)


class TestDrain:
    async def test_a_backlog_is_applied_as_one_group_in_order(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase, app: FastAPI
    ) -> None:
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        # Recorded but never enqueued: only the drain can apply them.
        pending = await record_pending(
            app.state.database, [(sender["name"], receiver["name"], Decimal(30))] * 4
        )
        result = drain_pending(sync_db, [pending[0].id], GROUP_SIZE)
        ours = {t.id for t in pending}
        # 4 x 30 > 100: the one applied last fails alone; the one named in the message goes first.
        assert pending[0].id in result.completed
        assert len(ours & set(result.completed)) == 3 and len(ours & set(result.failed)) == 1
        assert await balance_of(client, sender["name"]) == Decimal(10)
        assert await balance_of(client, receiver["name"]) == Decimal(90)
        assert_ledger_consistent(sync_db)
