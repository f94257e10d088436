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
from collections.abc import Awaitable
from decimal import Decimal

import httpx
import pytest

from shared.infra.database import SyncDatabase
from tests.e2e.conftest import Stack
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    count,
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


def _worker_writing(db: SyncDatabase) -> bool:
    """A worker's transaction holds row locks (it has an xid): a kill now rolls it back."""
    return (
        count(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'mini-ledger-worker' AND backend_xid IS NOT NULL",
        )
        > 0
    )


class TestWorkerKilledMixedKinds:
    async def test_sigkill_mid_backlog_of_every_kind_loses_and_doubles_nothing(
        self, stack: tuple[Stack, httpx.AsyncClient], sync_db: SyncDatabase
    ) -> None:
        """A backlog of transfers, deposits, withdrawals and partial reversals, drained in
        mixed groups; the worker is SIGKILLed while applying them. Each kind applies exactly
        once: the balances come out as the arithmetic says."""
        fault, client = stack
        pairs = await _fund_pairs(client, 2, funds="10000")
        originals = []
        for sender, receiver in pairs:
            responses = [
                await submit(client, sender["name"], receiver["name"], "10") for _ in range(20)
            ]
            originals.append([r.json()["result"]["id"] for r in responses])
        await settle(client, [i for ids in originals for i in ids])

        def post(path: str, body: dict[str, str]) -> Awaitable[httpx.Response]:
            return client.post(path, json=body, headers={"Idempotency-Key": unique("mix")})

        requests = []
        for (sender, receiver), ids in zip(pairs, originals, strict=True):
            requests += [submit(client, sender["name"], receiver["name"], "7") for _ in range(100)]
            money = {"currency": "USD"}
            requests += [
                post("/v1/deposits", {"merchant": receiver["name"], "amount": "3", **money})
                for _ in range(50)
            ]
            requests += [
                post("/v1/withdrawals", {"merchant": sender["name"], "amount": "2", **money})
                for _ in range(50)
            ]
            requests += [post(f"/v1/transfers/{i}/reversals", {"amount": "5"}) for i in ids]
        # Paused while the backlog builds up, so that it is drained in mixed groups.
        os.killpg(fault.worker.pid, signal.SIGSTOP)
        try:
            responses = await asyncio.gather(*requests)
        finally:
            os.killpg(fault.worker.pid, signal.SIGCONT)
        assert {r.status_code for r in responses} == {202}, [r.text for r in responses][:3]
        ids = [r.json()["result"]["id"] for r in responses]
        deadline = time.monotonic() + 60
        while not _worker_writing(sync_db):  # inside a group's transaction, past its claim
            assert time.monotonic() < deadline, "worker never started applying"
            await asyncio.sleep(0.002)
        os.killpg(fault.worker.pid, signal.SIGKILL)
        fault.worker.wait()
        assert await _count_final(client, ids) < len(ids), "the kill came too late"
        fault.start_worker()
        final = await settle(client, ids)
        assert {t["state"] for t in final} == {"completed"}
        for sender, receiver in pairs:
            # 20 x 10.10 out, 100 x 7.07 out, 50 x 2 out, 20 x (5 + 0.05 of the fee) back.
            assert await balance_of(client, sender["name"]) == Decimal("10000") - Decimal(
                "202"
            ) - Decimal("707") - Decimal("100") + Decimal("101")
            # 20 x 10 in, 100 x 7 in, 50 x 3 in, 20 x 5 back.
            assert await balance_of(client, receiver["name"]) == Decimal("200") + Decimal(
                "700"
            ) + Decimal("150") - Decimal("100")
        assert_ledger_consistent(sync_db)
