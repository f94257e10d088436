"""Races: many transfers at once through two API processes and two worker processes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal

import pytest

from shared.domain.money import compute_fee
from shared.infra.database import SyncDatabase
from tests.e2e.conftest import Cluster
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


async def _race_five_transfers_of_250(
    cluster: Cluster, percent_fee: str
) -> tuple[Counter[str], Decimal]:
    sender = await funded_merchant(cluster.client(0), "1000", percent_fee=percent_fee)
    receiver = await create_merchant(cluster.client(1))
    responses = await asyncio.gather(
        *(submit(cluster.client(i), sender["name"], receiver["name"], 250) for i in range(5))
    )
    assert [r.status_code for r in responses] == [202] * 5
    final = await settle(cluster.client(0), [r.json()["result"]["id"] for r in responses])
    remaining = await balance_of(cluster.client(1), sender["name"])
    assert remaining is not None
    return Counter(t["state"] for t in final), remaining


class TestFiveTransfersFromOneBalance:
    async def test_without_fee_exactly_four_complete(
        self, cluster: Cluster, sync_db: SyncDatabase
    ) -> None:
        states, remaining = await _race_five_transfers_of_250(cluster, "0")
        assert states == {"completed": 4, "failed": 1}
        assert remaining == 0
        assert_ledger_consistent(sync_db)

    async def test_with_two_percent_fee_exactly_three_complete(
        self, cluster: Cluster, sync_db: SyncDatabase
    ) -> None:
        states, remaining = await _race_five_transfers_of_250(cluster, "2")
        assert states == {"completed": 3, "failed": 2}
        assert remaining == Decimal("235")
        assert_ledger_consistent(sync_db)


class TestOppositeDirections:
    async def test_a_to_b_racing_b_to_a_settles_without_deadlock(
        self, cluster: Cluster, sync_db: SyncDatabase
    ) -> None:
        a = await funded_merchant(cluster.client(0), "1000", percent_fee="1")
        b = await funded_merchant(cluster.client(1), "1000", percent_fee="1")
        submissions = []
        for i in range(60):
            sender, receiver = (a, b) if i % 2 == 0 else (b, a)
            submissions.append(submit(cluster.client(i), sender["name"], receiver["name"], "10"))
        responses = await asyncio.gather(*submissions)
        final = await settle(cluster.client(0), [r.json()["result"]["id"] for r in responses])
        assert all(t["state"] == "completed" for t in final)  # funds never run short here
        # Each side sent 30 x (10 + 0.1 fee) and received 30 x 10.
        assert await balance_of(cluster.client(0), a["name"]) == Decimal("997")
        assert await balance_of(cluster.client(1), b["name"]) == Decimal("997")
        assert_ledger_consistent(sync_db)


class TestStorm:
    async def test_random_transfers_among_many_merchants(
        self, cluster: Cluster, sync_db: SyncDatabase
    ) -> None:
        rng = random.Random(20261124)
        merchants = []
        for i in range(12):
            fee = rng.choice(["0", "0.5", "2", "3.25"])
            merchants.append(await funded_merchant(cluster.client(i), "100", percent_fee=fee))
        fees = {m["id"]: Decimal(m["percent_fee"]) for m in merchants}
        planned = []
        for _ in range(300):
            sender, receiver = rng.sample(merchants, 2)
            amount = Decimal(rng.randint(1, 4000)) / 100
            planned.append((sender, receiver, amount))
        semaphore = asyncio.Semaphore(40)

        async def send(i: int, sender: dict, receiver: dict, amount: Decimal) -> str:
            async with semaphore:
                response = await submit(
                    cluster.client(i), sender["name"], receiver["name"], str(amount)
                )
                assert response.status_code == 202, response.text
                return str(response.json()["result"]["id"])

        ids = await asyncio.gather(*(send(i, *plan) for i, plan in enumerate(planned)))
        final = await settle(cluster.client(0), list(ids))
        states = Counter(t["state"] for t in final)
        assert states["completed"] > 0 and states["completed"] + states["failed"] == len(planned)

        expected = {m["id"]: Decimal("100") for m in merchants}
        for transfer in final:
            if transfer["state"] == "completed":
                amount = Decimal(transfer["amount"])
                fee = compute_fee(amount, fees[transfer["from_merchant_id"]])
                assert Decimal(transfer["fee"]) == fee
                expected[transfer["from_merchant_id"]] -= amount + fee
                expected[transfer["to_merchant_id"]] += amount
        for merchant in merchants:
            assert await balance_of(cluster.client(1), merchant["name"]) == expected[merchant["id"]]
        assert_ledger_consistent(sync_db)


async def test_withdrawals_racing_transfers_on_one_balance(
    cluster: Cluster, sync_db: SyncDatabase
) -> None:
    """Five withdrawals and five transfers of 250 at once from a balance of 1000 (0% fee):
    exactly four of the ten complete, whatever the mix, and nothing is left."""
    sender = await funded_merchant(cluster.client(0), "1000")
    receiver = await create_merchant(cluster.client(1))
    withdrawals = [
        cluster.client(i).post(
            "/v1/withdrawals",
            json={"merchant": sender["name"], "amount": "250", "currency": "USD"},
            headers={"Idempotency-Key": unique("w")},
        )
        for i in range(5)
    ]
    transfers = [submit(cluster.client(i), sender["name"], receiver["name"], 250) for i in range(5)]
    responses = await asyncio.gather(*withdrawals, *transfers)
    assert [r.status_code for r in responses] == [202] * 10
    final = await settle(cluster.client(0), [r.json()["result"]["id"] for r in responses])
    assert Counter(t["state"] for t in final) == {"completed": 4, "failed": 6}
    assert {t["failure_reason"] for t in final if t["state"] == "failed"} == {"Insufficient funds"}
    assert await balance_of(cluster.client(1), sender["name"]) == 0
    received = sum(t["kind"] == "transfer" for t in final if t["state"] == "completed")
    # A receiver that got nothing has no USD balance at all (failures open none).
    expected = None if received == 0 else Decimal(250 * received)
    assert await balance_of(cluster.client(1), receiver["name"]) == expected
    assert_ledger_consistent(sync_db)
