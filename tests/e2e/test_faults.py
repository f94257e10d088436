"""Faults: a worker killed mid-task, the broker restarted mid-load. Every accepted transfer
still reaches exactly one final state, and the ledger checks out.

Each test runs its own stack (see `Stack`): its Redis can be killed without touching the
session's workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from decimal import Decimal

import httpx
import pytest

from shared.infra.database import SyncDatabase
from tests.e2e.conftest import Stack
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    settle,
    submit,
    unique,
)

pytestmark = pytest.mark.e2e


async def _fund_pairs(
    client: httpx.AsyncClient, pairs: int, funds: str = "1000"
) -> list[tuple[dict, dict]]:
    result = []
    for _ in range(pairs):
        sender = await funded_merchant(client, funds, percent_fee="1")
        receiver = await create_merchant(client)
        result.append((sender, receiver))
    return result


async def _submit_many(
    client: httpx.AsyncClient, pairs: list[tuple[dict, dict]], count: int
) -> list[str]:
    responses = await asyncio.gather(
        *(
            submit(client, pairs[i % len(pairs)][0]["name"], pairs[i % len(pairs)][1]["name"], "7")
            for i in range(count)
        )
    )
    assert all(r.status_code == 202 for r in responses), [
        r.text for r in responses if r.status_code != 202
    ]
    return [r.json()["result"]["id"] for r in responses]


async def _count_final(client: httpx.AsyncClient, ids: list[str]) -> int:
    states = await asyncio.gather(*(client.get(f"/transfers/{i}") for i in ids))
    return sum(r.json()["result"]["state"] != "pending" for r in states)


async def _check_balances(
    client: httpx.AsyncClient, pairs: list[tuple[dict, dict]], transfers: int, funds: str = "1000"
) -> None:
    per_pair = transfers // len(pairs)
    for sender, receiver in pairs:
        assert await balance_of(client, sender["name"]) == Decimal(funds) - per_pair * Decimal(
            "7.07"
        )
        assert await balance_of(client, receiver["name"]) == per_pair * Decimal("7")


class TestWorkerKilled:
    async def test_sigkill_mid_load_loses_and_doubles_nothing(
        self, stack: tuple[Stack, httpx.AsyncClient], sync_db: SyncDatabase
    ) -> None:
        fault, client = stack
        pairs = await _fund_pairs(client, 4, funds="10000")
        # One bulk request of several groups: the worker is killed while applying one.
        items = [
            {
                "idempotency_key": unique("kill"),
                "from_merchant": pairs[i % 4][0]["name"],
                "to_merchant": pairs[i % 4][1]["name"],
                "amount": "7",
                "currency": "USD",
            }
            for i in range(4000)
        ]
        response = await client.post("/batches", json={"transfers": items})
        assert response.status_code == 202
        ids = [item["transfer"]["id"] for item in response.json()["result"]["items"]]
        batch_id = response.json()["result"]["id"]
        deadline = time.monotonic() + 60
        while True:
            counts = (await client.get(f"/batches/{batch_id}")).json()["result"]["counts"]
            if counts["completed"] > 0:
                break
            assert time.monotonic() < deadline, "worker never started applying"
            await asyncio.sleep(0.01)
        os.killpg(fault.worker.pid, signal.SIGKILL)  # the worker and its pool children
        fault.worker.wait()
        counts = (await client.get(f"/batches/{batch_id}")).json()["result"]["counts"]
        assert counts["pending"] > 0, "the kill came too late to hit the load"
        fault.start_worker()
        deadline = time.monotonic() + 120
        while not (progress := (await client.get(f"/batches/{batch_id}")).json()["result"])[
            "finished"
        ]:
            assert time.monotonic() < deadline, progress
            await asyncio.sleep(0.2)
        assert progress["counts"] == {"pending": 0, "completed": len(ids), "failed": 0}
        await _check_balances(client, pairs, len(ids), funds="10000")
        assert_ledger_consistent(sync_db)


class TestBrokerRestarted:
    async def test_lost_messages_and_failed_enqueues_are_swept_back(
        self, stack: tuple[Stack, httpx.AsyncClient], sync_db: SyncDatabase
    ) -> None:
        fault, client = stack
        pairs = await _fund_pairs(client, 4)
        ids = await _submit_many(client, pairs, 120)
        # Crash Redis (SIGKILL: nothing saved), so queued messages are lost.
        assert fault.redis.pid is not None
        os.kill(fault.redis.pid, signal.SIGKILL)
        # Accepted while the broker is down: recorded, the enqueue fails, the sweep finds them.
        ids += await _submit_many(client, pairs, 40)
        fault.redis.start()
        final = await settle(client, ids)
        assert all(t["state"] == "completed" for t in final)  # every sender can afford its share
        await _check_balances(client, pairs, len(ids))
        assert_ledger_consistent(sync_db)
