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

from shared.db.database import SyncDatabase
from tests.e2e.conftest import Stack
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    settle,
    submit,
)

pytestmark = pytest.mark.e2e


async def _fund_pairs(client: httpx.AsyncClient, pairs: int) -> list[tuple[dict, dict]]:
    result = []
    for _ in range(pairs):
        sender = await funded_merchant(client, "1000", percent_fee="1")
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


async def _check_outcome(
    client: httpx.AsyncClient, pairs: list[tuple[dict, dict]], ids: list[str]
) -> None:
    final = await settle(client, ids)
    assert all(t["state"] == "completed" for t in final)  # every sender can afford its share
    per_pair = len(ids) // len(pairs)
    for sender, receiver in pairs:
        assert await balance_of(client, sender["name"]) == Decimal("1000") - per_pair * Decimal(
            "7.07"
        )
        assert await balance_of(client, receiver["name"]) == per_pair * Decimal("7")


class TestWorkerKilled:
    async def test_sigkill_mid_load_loses_and_doubles_nothing(
        self, stack: tuple[Stack, httpx.AsyncClient], sync_db: SyncDatabase
    ) -> None:
        fault, client = stack
        pairs = await _fund_pairs(client, 4)
        ids = await _submit_many(client, pairs, 200)
        deadline = time.monotonic() + 60
        while (done := await _count_final(client, ids)) < 5:
            assert time.monotonic() < deadline, "worker never started applying"
            await asyncio.sleep(0.05)
        os.killpg(fault.worker.pid, signal.SIGKILL)  # the worker and its pool children
        fault.worker.wait()
        assert done < len(ids), "the kill came too late to hit the load"
        fault.start_worker()
        await _check_outcome(client, pairs, ids)
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
        await _check_outcome(client, pairs, ids)
        assert_ledger_consistent(sync_db)
