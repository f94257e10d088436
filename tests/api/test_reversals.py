"""Reversals (SPEC Part 2, Movements): full and partial, the fee refund rule, refusals at
submission, the worker's re-check under the original's lock, and who may reverse."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shared.db.transfers import TransferRepository
from shared.domain.access import OPERATOR
from shared.domain.transfers import ReversalRequest
from shared.infra.database import SyncDatabase
from shared.services.posting import apply_group
from shared.services.transfers import new_reversal
from tests.api.test_movements import bearer, merchant_key
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    record_pending,
    settle,
    submit,
    unique,
)

pytestmark = pytest.mark.integration

EXCEEDS = "Amount exceeds the reversible remainder"


async def reverse(
    client: httpx.AsyncClient,
    transfer_id: str,
    amount: Any = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {} if amount is None else {"amount": amount}
    return await client.post(
        f"/v1/transfers/{transfer_id}/reversals",
        json=body,
        headers={"Idempotency-Key": key or unique("rev"), **(headers or {})},
    )


async def completed_transfer(
    client: httpx.AsyncClient, amount: str = "100", percent_fee: str = "2", funds: str = "1000"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(sender, receiver, the completed transfer) with a receiver that holds nothing else."""
    sender = await funded_merchant(client, funds, percent_fee=percent_fee)
    receiver = await create_merchant(client)
    response = await submit(client, sender["name"], receiver["name"], amount)
    (transfer,) = await settle(client, [response.json()["result"]["id"]])
    assert transfer["state"] == "completed"
    return sender, receiver, transfer


def fee_accounts_total(db: SyncDatabase, currency: str = "USD") -> Decimal:
    with db.transaction() as connection:
        total = connection.execute(
            text("SELECT sum(amount) FROM accounts WHERE kind = 'fee' AND currency = :c"),
            {"c": currency},
        ).scalar_one()
    return Decimal(total)


async def get(client: httpx.AsyncClient, transfer_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/transfers/{transfer_id}")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()["result"]
    return result


class TestFullAndPartial:
    async def test_full_reversal_gives_back_amount_and_fee(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender, receiver, transfer = await completed_transfer(client)
        assert transfer["reversed_amount"] == "0.00000000"
        response = await reverse(client, transfer["id"])
        assert response.status_code == 202
        reversal = response.json()["result"]
        assert reversal["kind"] == "reversal"
        assert reversal["reverses"] == transfer["id"]
        assert reversal["reversed_amount"] is None
        assert reversal["from_merchant_id"] == receiver["id"]
        assert reversal["to_merchant_id"] == sender["id"]
        assert (reversal["amount"], reversal["fee"]) == ("100.00000000", "2.00000000")
        (settled,) = await settle(client, [reversal["id"]])
        assert settled["state"] == "completed"
        assert await balance_of(client, sender["name"]) == Decimal("1000")
        assert await balance_of(client, receiver["name"]) == Decimal("0")
        assert (await get(client, transfer["id"]))["reversed_amount"] == "100.00000000"
        assert_ledger_consistent(sync_db)

    async def test_partial_reversals_refund_proportionally_and_the_last_exactly(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        # fee = 3 * 33.33 / 100 = 0.9999 -> every third refunds 0.3333, the last the rest.
        sender, _, transfer = await completed_transfer(client, "3", "33.33", "10")
        assert transfer["fee"] == "0.99990000"
        fees_before = fee_accounts_total(sync_db)
        refunds = []
        for _ in range(2):
            response = await reverse(client, transfer["id"], "1")
            (settled,) = await settle(client, [response.json()["result"]["id"]])
            assert settled["state"] == "completed"
            refunds.append(settled["fee"])
        assert (await get(client, transfer["id"]))["reversed_amount"] == "2.00000000"
        last = await reverse(client, transfer["id"])  # the remainder: 1
        assert last.json()["result"]["amount"] == "1.00000000"
        (settled,) = await settle(client, [last.json()["result"]["id"]])
        refunds.append(settled["fee"])
        assert refunds == ["0.33330000", "0.33330000", "0.33330000"]
        assert await balance_of(client, sender["name"]) == Decimal("10")
        assert fee_accounts_total(sync_db) == fees_before - Decimal("0.9999")
        assert_ledger_consistent(sync_db)

    async def test_last_reversal_refunds_exactly_what_rounding_left(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        # fee 0.00000001 on 0.00000003: a third of it rounds to 0; the last refunds the unit.
        sender, _, transfer = await completed_transfer(client, "0.00000003", "50", "1")
        assert transfer["fee"] == "0.00000002"
        fees = []
        for amount in ("0.00000001", "0.00000001", None):
            response = await reverse(client, transfer["id"], amount)
            (settled,) = await settle(client, [response.json()["result"]["id"]])
            fees.append(settled["fee"])
        # 2 x 1/3 = 0.67 -> 1 unit; then 1 unit is left, the last takes it: 2 units in all.
        assert fees == ["0.00000001", "0.00000001", "0.00000000"]
        assert await balance_of(client, sender["name"]) == Decimal("1")
        assert_ledger_consistent(sync_db)

    async def test_receiver_short_of_funds_fails(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        _, receiver, transfer = await completed_transfer(client)
        drain = await client.post(
            "/v1/withdrawals",
            json={"merchant": receiver["name"], "amount": "50", "currency": "USD"},
            headers={"Idempotency-Key": unique()},
        )
        await settle(client, [drain.json()["result"]["id"]])
        response = await reverse(client, transfer["id"], "60")
        (settled,) = await settle(client, [response.json()["result"]["id"]])
        assert settled["state"] == "failed"
        assert settled["failure_reason"] == "Insufficient funds"
        assert (await get(client, transfer["id"]))["reversed_amount"] == "0.00000000"
        assert await balance_of(client, receiver["name"]) == Decimal("50")
        assert_ledger_consistent(sync_db)


class TestRefusedAtSubmission:
    async def test_unknown_transfer(self, client: httpx.AsyncClient) -> None:
        missing = uuid.uuid4()
        response = await reverse(client, str(missing))
        assert response.status_code == 404
        assert response.json()["error"] == f"Transfer {missing} does not exist"

    async def test_only_completed_transfers(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "1")
        receiver = await create_merchant(client)
        failed = await submit(client, sender["name"], receiver["name"], "2")
        (failed_transfer,) = await settle(client, [failed.json()["result"]["id"]])
        deposit = await client.post(
            "/v1/deposits",
            json={"merchant": receiver["name"], "amount": "1", "currency": "USD"},
            headers={"Idempotency-Key": unique(), "Prefer": "wait=10"},
        )
        _, _, transfer = await completed_transfer(client)
        reversal = await reverse(client, transfer["id"], "1")
        await settle(client, [reversal.json()["result"]["id"]])
        for original in (
            failed_transfer["id"],
            deposit.json()["result"]["id"],
            reversal.json()["result"]["id"],
        ):
            response = await reverse(client, original)
            assert response.status_code == 400
            assert response.json()["error"] == "Only completed transfers can be reversed"

    async def test_amount_above_the_remainder(self, client: httpx.AsyncClient) -> None:
        _, _, transfer = await completed_transfer(client)
        response = await reverse(client, transfer["id"], "100.00000001")
        assert response.status_code == 400
        assert response.json()["error"] == EXCEEDS
        full = await reverse(client, transfer["id"])
        await settle(client, [full.json()["result"]["id"]])
        nothing_left = await reverse(client, transfer["id"])
        assert nothing_left.status_code == 400
        assert nothing_left.json()["error"] == EXCEEDS

    async def test_pending_reversals_count_against_the_remainder(
        self, api_client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        """The original is recorded, never enqueued, and applied by the test; the reversals
        may stay pending or be applied by the session's workers: the numbers are the same."""
        sender = await funded_merchant(api_client, "1000", percent_fee="2")
        receiver = await create_merchant(api_client)
        (original,) = await record_pending(
            app.state.database, [(sender["name"], receiver["name"], Decimal(100))]
        )
        transfer_id = str(original.id)
        pending = await reverse(api_client, transfer_id)
        assert pending.status_code == 400  # still pending itself
        assert pending.json()["error"] == "Only completed transfers can be reversed"
        apply_group(sync_db, [original.id])
        first = await reverse(api_client, transfer_id, "70")
        assert first.status_code == 202
        assert first.json()["result"]["fee"] == "1.40000000"
        over = await reverse(api_client, transfer_id, "30.00000001")
        assert over.status_code == 400
        assert over.json()["error"] == EXCEEDS
        rest = await reverse(api_client, transfer_id)
        assert rest.status_code == 202
        # The rest completes the original (with the pending one): it refunds the fee left.
        assert (rest.json()["result"]["amount"], rest.json()["result"]["fee"]) == (
            "30.00000000",
            "0.60000000",
        )
        apply_group(
            sync_db,
            [uuid.UUID(first.json()["result"]["id"]), uuid.UUID(rest.json()["result"]["id"])],
        )
        assert await balance_of(api_client, sender["name"]) == Decimal("1000")
        assert_ledger_consistent(sync_db)

    async def test_malformed_amount(self, api_client: httpx.AsyncClient) -> None:
        for amount in ("0", "-1", "1.000000001", "abc", True):
            response = await reverse(api_client, str(uuid.uuid4()), amount)
            assert response.status_code == 422
            assert response.json()["details"][0]["field"] == "body.amount"


class TestWhoMayReverse:
    async def test_receiver_write_key_yes_sender_and_others_no(
        self, client: httpx.AsyncClient
    ) -> None:
        sender, receiver, transfer = await completed_transfer(client)
        stranger = await create_merchant(client)
        by_sender = await reverse(
            client, transfer["id"], "1", headers=bearer(await merchant_key(client, sender["name"]))
        )
        assert by_sender.status_code == 403
        by_stranger = await reverse(
            client,
            transfer["id"],
            "1",
            headers=bearer(await merchant_key(client, stranger["name"])),
        )
        assert by_stranger.status_code == 404
        read_key = await merchant_key(client, receiver["name"], scope="read")
        assert (
            await reverse(client, transfer["id"], "1", headers=bearer(read_key))
        ).status_code == 403
        write_key = await merchant_key(client, receiver["name"])
        allowed = await reverse(client, transfer["id"], "1", headers=bearer(write_key))
        assert allowed.status_code == 202


class TestIdempotency:
    async def test_replay_after_the_full_reversal_returns_it(
        self, client: httpx.AsyncClient
    ) -> None:
        _, _, transfer = await completed_transfer(client)
        key = unique("rev")
        first = await reverse(client, transfer["id"], key=key)
        await settle(client, [first.json()["result"]["id"]])
        again = await reverse(client, transfer["id"], key=key)
        assert again.status_code == 200
        assert again.json()["result"]["id"] == first.json()["result"]["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        different = await reverse(client, transfer["id"], "1", key=key)
        assert different.status_code == 422


class TestRaces:
    async def test_five_concurrent_reversals_of_30_from_100_exactly_three_complete(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender, receiver, transfer = await completed_transfer(client)
        responses = await asyncio.gather(*(reverse(client, transfer["id"], "30") for _ in range(5)))
        accepted = [r.json()["result"]["id"] for r in responses if r.status_code == 202]
        refused = [r for r in responses if r.status_code != 202]
        assert all(r.status_code == 400 and r.json()["error"] == EXCEEDS for r in refused)
        final = await settle(client, accepted)
        completed = [t for t in final if t["state"] == "completed"]
        assert len(completed) == 3
        assert all(t["failure_reason"] == EXCEEDS for t in final if t["state"] == "failed")
        assert (await get(client, transfer["id"]))["reversed_amount"] == "90.00000000"
        assert await balance_of(client, receiver["name"]) == Decimal("10")
        assert await balance_of(client, sender["name"]) == Decimal("1000") - Decimal("10.2")
        assert_ledger_consistent(sync_db)

    async def test_worker_recheck_fails_the_reversals_that_no_longer_fit(
        self, api_client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        """Five reversals of 30 recorded as concurrent submissions would record them (each
        checked while the others were not visible yet), then applied concurrently: the
        original's lock lets exactly three through."""
        sender = await funded_merchant(api_client, "1000", percent_fee="2")
        receiver = await create_merchant(api_client)
        response = await submit(api_client, sender["name"], receiver["name"], "100")
        transfer_id = uuid.UUID(response.json()["result"]["id"])
        apply_group(sync_db, [transfer_id])
        async with app.state.database.transaction() as connection:
            repository = TransferRepository(connection)
            reversible = await repository.get_reversible(transfer_id)
            assert reversible is not None
            request = ReversalRequest(transfer_id, Decimal(30))
            reversals = [
                new_reversal(OPERATOR, reversible, request, None, unique("rev"), None)
                for _ in range(5)
            ]
            await repository.insert_pending_many(reversals)
        reversal_ids = [reversal.id for reversal in reversals]
        results = await asyncio.gather(
            *(asyncio.to_thread(apply_group, sync_db, [r]) for r in reversal_ids)
        )
        completed = [r for result in results for r in result.completed]
        failed = [r for result in results for r in result.failed]
        assert (len(completed), len(failed)) == (3, 2)
        with sync_db.transaction() as connection:
            reasons = (
                connection.execute(
                    text("SELECT failure_reason FROM transfers WHERE id = ANY(:ids)"),
                    {"ids": failed},
                )
                .scalars()
                .all()
            )
        assert reasons == [EXCEEDS, EXCEEDS]
        assert await balance_of(api_client, receiver["name"]) == Decimal("10")
        assert_ledger_consistent(sync_db)

    async def test_a_reversal_racing_a_transfer_out_of_the_receivers_balance(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        _, receiver, transfer = await completed_transfer(client)
        third = await create_merchant(client)
        reversal, outgoing = await asyncio.gather(
            reverse(client, transfer["id"]),
            submit(client, receiver["name"], third["name"], "100"),
        )
        final = await settle(
            client, [reversal.json()["result"]["id"], outgoing.json()["result"]["id"]]
        )
        assert sorted(t["state"] for t in final) == ["completed", "failed"]
        assert all(
            t["failure_reason"] == "Insufficient funds" for t in final if t["state"] == "failed"
        )
        assert await balance_of(client, receiver["name"]) == Decimal("0")
        assert_ledger_consistent(sync_db)
