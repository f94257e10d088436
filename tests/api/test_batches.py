"""POST /batches and GET /batches/{id}: item by item, exactly once, at scale."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx

from shared.infra.database import SyncDatabase
from tests.helpers import (
    archive,
    assert_ledger_consistent,
    balance_of,
    count,
    create_merchant,
    funded_merchant,
    settle,
    submit,
    unique,
)


def item(
    sender: str, receiver: str, amount: Any, key: str | None = None, currency: str = "USD"
) -> dict[str, Any]:
    return {
        "idempotency_key": key or unique("bk"),
        "from_merchant": sender,
        "to_merchant": receiver,
        "amount": amount,
        "currency": currency,
    }


async def post_batch(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/batches", json={"transfers": items}, timeout=120)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == 202
    result: dict[str, Any] = response.json()["result"]
    return result


async def wait_finished(
    client: httpx.AsyncClient, batch_id: str, timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/batches/{batch_id}")
        assert response.status_code == 200
        progress: dict[str, Any] = response.json()["result"]
        if progress["finished"]:
            return progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.2)


def transfer_count(db: SyncDatabase, keys: list[str]) -> int:
    return count(db, "SELECT count(*) FROM transfers WHERE idempotency_key = ANY(:keys)", keys=keys)


class TestSubmitBatch:
    async def test_each_item_is_judged_alone(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "100", percent_fee="1")
        receiver = await create_merchant(client)
        archived = await create_merchant(client)
        archive(sync_db, archived["id"])
        repeated = unique("repeat")
        items = [
            item(sender["name"], receiver["name"], "10"),  # 0 accepted
            item(sender["name"], receiver["name"], "0"),  # 1 invalid amount
            item(sender["name"], "nobody-at-all", "1"),  # 2 unknown merchant
            item(sender["name"], receiver["name"], "1", currency="BTC"),  # 3 no balance
            item(sender["name"], archived["name"], "1"),  # 4 archived
            item(sender["name"], sender["name"], "1"),  # 5 same merchant
            item(sender["name"], receiver["name"], "2", key=repeated),  # 6 accepted
            item(
                sender["name"], receiver["name"], "2.00", key=repeated
            ),  # 7 same key, same request
            item(sender["name"], receiver["name"], "3", key=repeated),  # 8 same key, other request
            {"idempotency_key": "bad key", "amount": "x"},  # 9 malformed
            item(sender["name"], receiver["name"], "500"),  # 10 accepted, fails for funds later
        ]
        result = await post_batch(client, items)
        assert result["accepted"] == 4 and result["refused"] == 7
        got = result["items"]
        assert [entry["index"] for entry in got] == list(range(len(items)))
        assert (
            got[0]["transfer"]["state"] == "pending" and got[0]["transfer"]["fee"] == "0.10000000"
        )
        assert got[1]["error"] == {
            "status": 422,
            "message": ["Amount must be greater than 0"],
            "details": [{"field": "body.amount", "message": "Amount must be greater than 0"}],
        }
        assert got[2]["error"] == {
            "status": 404,
            "message": "From merchant or to merchant does not exist",
        }
        assert got[3]["error"] == {
            "status": 404,
            "message": "From merchant balance with currency BTC does not exist",
        }
        assert got[4]["error"] == {
            "status": 400,
            "message": f"Merchant {archived['name']} is archived",
        }
        assert got[5]["error"] == {
            "status": 422,
            "message": ["Cannot transfer to the same merchant"],
            "details": [
                {"field": "body.to_merchant", "message": "Cannot transfer to the same merchant"}
            ],
        }
        assert got[7]["transfer"]["id"] == got[6]["transfer"]["id"]
        reused = f"Idempotency-Key {repeated} was already used for a different request"
        assert got[8]["error"] == {
            "status": 422,
            "message": [reused],
            "details": [{"field": "body.idempotency_key", "message": reused}],
        }
        assert got[9]["error"]["status"] == 422 and len(got[9]["error"]["message"]) >= 3

        progress = await wait_finished(client, result["id"])
        assert progress["accepted"] == 4 and progress["refused"] == 7
        # Counted per accepted item: items 6 and 7 are one transfer, counted twice.
        assert progress["counts"] == {"pending": 0, "completed": 3, "failed": 1}
        assert progress["created"].endswith("Z")
        assert await balance_of(client, sender["name"]) == Decimal("100") - Decimal("12.12")
        assert_ledger_consistent(sync_db)

    async def test_reposting_replays_and_writes_nothing_twice(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "1000")
        receiver = await create_merchant(client)
        items = [item(sender["name"], receiver["name"], "1") for _ in range(40)]
        first = await post_batch(client, items[:20])  # part of the batch
        await wait_finished(client, first["id"])
        second = await post_batch(client, items)  # then all of it
        assert second["accepted"] == 40 and second["refused"] == 0
        first_ids = [entry["transfer"]["id"] for entry in first["items"]]
        assert [entry["transfer"]["id"] for entry in second["items"][:20]] == first_ids
        third = await post_batch(client, items)  # and all of it again
        assert [e["transfer"]["id"] for e in third["items"]] == [
            e["transfer"]["id"] for e in second["items"]
        ]
        await wait_finished(client, third["id"])
        assert transfer_count(sync_db, [i["idempotency_key"] for i in items]) == 40
        assert await balance_of(client, sender["name"]) == Decimal("960")
        progress = await wait_finished(client, third["id"])
        assert progress["counts"]["completed"] == 40
        listed = await client.get("/transfers", params={"batch_id": second["id"], "limit": 1000})
        assert len(listed.json()["result"]) == 40
        assert_ledger_consistent(sync_db)

    async def test_batch_racing_single_transfers_on_one_balance(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "500", percent_fee="0")
        receivers = [await create_merchant(client) for _ in range(5)]
        items = [item(sender["name"], receivers[i % 5]["name"], "10") for i in range(60)]
        batch, *singles = await asyncio.gather(
            post_batch(client, items),
            *(submit(client, sender["name"], receivers[i % 5]["name"], "10") for i in range(20)),
        )
        await wait_finished(client, batch["id"])
        final = await settle(client, [r.json()["result"]["id"] for r in singles])
        progress = (await client.get(f"/batches/{batch['id']}")).json()["result"]
        completed = progress["counts"]["completed"] + sum(t["state"] == "completed" for t in final)
        assert completed == 50  # 500 / 10: exactly, however they interleave
        assert await balance_of(client, sender["name"]) == 0
        assert_ledger_consistent(sync_db)

    async def test_ten_thousand_items(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        senders = [await funded_merchant(client, "100000", percent_fee="1.5") for _ in range(20)]
        receivers = [await create_merchant(client) for _ in range(20)]
        items = [
            item(senders[i % 20]["name"], receivers[(i * 7) % 20]["name"], f"{1 + i % 50}.25")
            for i in range(10_000)
        ]
        result = await post_batch(client, items)
        assert result["accepted"] == 10_000 and result["refused"] == 0
        progress = await wait_finished(client, result["id"], timeout_s=300)
        assert progress["counts"] == {"pending": 0, "completed": 10_000, "failed": 0}
        assert_ledger_consistent(sync_db)


class TestBatchLimits:
    async def test_more_than_ten_thousand_items_is_413(self, client: httpx.AsyncClient) -> None:
        items = [item("a", "b", "1") for _ in range(10_001)]
        response = await client.post("/batches", json={"transfers": items})
        assert response.status_code == 413
        assert response.json() == {"status": 413, "error": "A batch holds at most 10000 transfers"}

    async def test_empty_or_malformed_batch_is_422(self, client: httpx.AsyncClient) -> None:
        for body in ({"transfers": []}, {"transfers": "x"}, {}):
            response = await client.post("/batches", json=body)
            assert response.status_code == 422, body
            assert isinstance(response.json()["error"], list)

    async def test_unknown_batch_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/batches/00000000-0000-0000-0000-000000000000")
        assert response.status_code == 404
        assert (
            response.json()["error"] == "Batch 00000000-0000-0000-0000-000000000000 does not exist"
        )


class TestOperations:
    async def test_queue_status(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ops/queue")
        assert response.status_code == 200
        status = response.json()["result"]
        assert set(status) == {"queue_depth", "pending_transfers", "oldest_pending_age_s"}
        assert isinstance(status["queue_depth"], int) and status["pending_transfers"] >= 0


def movement(kind: str, merchant: str, amount: Any, key: str | None = None) -> dict[str, Any]:
    return {
        "idempotency_key": key or unique("bm"),
        "kind": kind,
        "merchant": merchant,
        "amount": amount,
        "currency": "USD",
    }


class TestDepositsAndWithdrawalsInBatches:
    async def test_mixed_kinds_each_with_its_own_rules(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        """A payout run: deposits, withdrawals and transfers in one batch, in order."""
        alice = await funded_merchant(client, "10")
        bob = await funded_merchant(client, "1")  # a withdrawal needs a balance at submission
        items = [
            movement("deposit", bob["name"], "5"),
            item(alice["name"], bob["name"], "4"),
            movement("withdrawal", alice["name"], "6"),
            movement("withdrawal", alice["name"], "0.00000001"),  # nothing left: fails
            movement("withdrawal", bob["name"], "9"),
            movement("withdrawal", "nobody-here", "1"),
            {**movement("withdrawal", bob["name"], "1"), "kind": "gift"},
            {**movement("deposit", bob["name"], "1"), "from_merchant": alice["name"]},
        ]
        result = await post_batch(client, items)
        assert (result["accepted"], result["refused"]) == (5, 3)
        errors = {i["index"]: i["error"] for i in result["items"] if i.get("error")}
        assert errors[5] == {"status": 404, "message": "Merchant nobody-here does not exist"}
        assert errors[6]["status"] == 422
        assert "body.kind" in {detail["field"] for detail in errors[6]["details"]}
        assert errors[7]["status"] == 422
        kinds = [i["transfer"]["kind"] for i in result["items"] if i.get("transfer")]
        assert kinds == ["deposit", "transfer", "withdrawal", "withdrawal", "withdrawal"]
        progress = await wait_finished(client, result["id"])
        assert progress["counts"] == {"pending": 0, "completed": 4, "failed": 1}
        assert await balance_of(client, alice["name"]) == Decimal("0")
        assert await balance_of(client, bob["name"]) == Decimal("1")  # 1 + 5 + 4 - 9
        assert_ledger_consistent(sync_db)

    async def test_deposits_need_an_admin_key(self, client: httpx.AsyncClient) -> None:
        merchant = await funded_merchant(client, "10")
        created = await client.post(
            "/v1/api-keys", json={"name": unique("k"), "merchant": merchant["name"]}
        )
        headers = {"Authorization": f"Bearer {created.json()['result']['secret']}"}
        response = await client.post(
            "/batches",
            json={
                "transfers": [
                    movement("deposit", merchant["name"], "1"),
                    movement("withdrawal", merchant["name"], "1"),
                ]
            },
            headers=headers,
        )
        assert response.status_code == 202
        first, second = response.json()["result"]["items"]
        assert first["error"] == {"status": 403, "message": "Forbidden"}
        assert second["transfer"]["kind"] == "withdrawal"
