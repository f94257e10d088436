"""The transfer lifecycle through the API, with real workers applying transfers."""

import asyncio
import uuid
from decimal import Decimal

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


class TestSubmitTransfer:
    async def test_accepts_as_pending_then_completes(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "1000", percent_fee="2")
        receiver = await create_merchant(client)
        key = unique("key")
        response = await submit(client, sender["name"], receiver["name"], 100, key=key)
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == 202
        transfer = body["result"]
        assert response.headers["location"] == f"/transfers/{transfer['id']}"
        assert "idempotent-replayed" not in response.headers
        assert transfer["state"] == "pending"
        assert transfer["processed"] is None and transfer["failure_reason"] is None
        assert transfer["amount"] == "100.00000000"
        assert transfer["fee"] == "2.00000000"
        assert transfer["percent_fee"] == "2.00"
        assert transfer["idempotency_key"] == key
        assert transfer["from_merchant_id"] == sender["id"]
        assert transfer["to_merchant_id"] == receiver["id"]

        (final,) = await settle(client, [transfer["id"]])
        assert final["state"] == "completed"
        assert final["processed"].endswith("Z")
        assert await balance_of(client, sender["name"]) == Decimal("898")
        # The receiver had no USD balance: applying the transfer opened it.
        assert await balance_of(client, receiver["name"]) == Decimal("100")
        assert_ledger_consistent(sync_db)

    async def test_insufficient_funds_fails_and_moves_nothing(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "100", percent_fee="2")
        receiver = await create_merchant(client)
        response = await submit(client, sender["name"], receiver["name"], "99")
        (final,) = await settle(client, [response.json()["result"]["id"]])
        assert final["state"] == "failed"
        assert final["failure_reason"] == "Insufficient funds"
        assert final["fee"] == "1.98000000"
        assert final["processed"] is not None
        assert await balance_of(client, sender["name"]) == Decimal("100")
        assert await balance_of(client, receiver["name"]) is None
        assert_ledger_consistent(sync_db)

    async def test_fee_is_the_senders_fee_at_submission(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10", percent_fee="12.5")
        receiver = await create_merchant(client, "50")
        response = await submit(client, sender["name"], receiver["name"], "0.00000003")
        # 0.00000003 * 12.5% = 0.00000000375 -> half up -> 0.00000000
        assert response.json()["result"]["fee"] == "0.00000000"
        response = await submit(client, sender["name"], receiver["name"], "0.00000004")
        assert response.json()["result"]["fee"] == "0.00000001"  # 0.000000005 rounds up

    async def test_exact_decimals_arrive_exactly(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "99999999999")
        receiver = await create_merchant(client)
        response = await client.post(
            "/transfers",
            content=(
                f'{{"from_merchant": "{sender["name"]}", "to_merchant": "{receiver["name"]}",'
                ' "amount": 12345678901.23456789, "currency": "usd"}'
            ),
            headers={"Idempotency-Key": unique(), "Content-Type": "application/json"},
        )
        assert response.status_code == 202
        assert response.json()["result"]["amount"] == "12345678901.23456789"
        assert response.json()["result"]["currency"] == "USD"


class TestSubmissionRefusals:
    async def test_same_merchant_is_422(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        response = await submit(client, sender["name"], sender["name"], "1")
        assert response.status_code == 422
        message = "Cannot transfer to the same merchant"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.to_merchant", "message": message}],
        }

    async def test_missing_idempotency_key_is_field_required(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/transfers",
            json={"from_merchant": "a", "to_merchant": "b", "amount": 1, "currency": "USD"},
        )
        assert response.status_code == 422
        assert response.json() == {
            "status": 422,
            "error": ["Field required"],
            "details": [{"field": "header.Idempotency-Key", "message": "Field required"}],
        }

    async def test_malformed_idempotency_key_is_422(self, client: httpx.AsyncClient) -> None:
        response = await submit(client, "a", "b", 1, key="has space")
        message = "Idempotency-Key must be 1 to 255 visible ASCII characters"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "header.Idempotency-Key", "message": message}],
        }

    async def test_unknown_merchant_is_404(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        response = await submit(client, sender["name"], "nobody-at-all", "1")
        assert response.status_code == 404
        assert response.json() == {
            "status": 404,
            "error": "From merchant or to merchant does not exist",
        }

    async def test_sender_without_balance_in_currency_is_404(
        self, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(client, "10", currency="USD")
        receiver = await create_merchant(client)
        response = await submit(client, sender["name"], receiver["name"], "1", currency="btc")
        assert response.status_code == 404
        assert response.json() == {
            "status": 404,
            "error": "From merchant balance with currency BTC does not exist",
        }

    async def test_archived_merchant_is_400(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        archive(sync_db, receiver["id"])
        response = await submit(client, sender["name"], receiver["name"], "1")
        assert response.status_code == 400
        assert response.json() == {
            "status": 400,
            "error": f"Merchant {receiver['name']} is archived",
        }

    async def test_refusal_records_nothing_and_leaves_the_key_free(
        self, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        key = unique("key")
        refused = await submit(client, sender["name"], "nobody-at-all", "1", key=key)
        assert refused.status_code == 404
        accepted = await submit(client, sender["name"], receiver["name"], "1", key=key)
        assert accepted.status_code == 202

    async def test_amount_rules(self, client: httpx.AsyncClient) -> None:
        cases = {
            "0": "Amount must be greater than 0",
            "-5": "Amount must be greater than 0",
            "1.000000001": "Amount must have at most 8 decimal places",
            "NaN": "Amount must be a decimal number",
            "1e400": "Amount must be less than 100000000000000000000",
        }
        for amount, message in cases.items():
            response = await submit(client, "a", "b", amount)
            assert response.json() == {
                "status": 422,
                "error": [message],
                "details": [{"field": "body.amount", "message": message}],
            }, amount
        response = await submit(client, "a", "b", True)
        assert response.json()["error"] == ["Amount must be a decimal number or a string"]

    async def test_json_number_out_of_range_is_422_not_rounded(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/transfers",
            content=b'{"from_merchant": "a", "to_merchant": "b", "amount": 1e400, '
            b'"currency": "USD"}',
            headers={"Idempotency-Key": unique(), "Content-Type": "application/json"},
        )
        assert response.status_code == 422

    async def test_nan_literal_is_invalid_json(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/transfers",
            content='{"from_merchant": "a", "to_merchant": "b", "amount": NaN, "currency": "USD"}',
            headers={"Idempotency-Key": unique(), "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["error"][0].startswith("Invalid JSON")

    async def test_bad_currency_is_422(self, client: httpx.AsyncClient) -> None:
        response = await submit(client, "a", "b", "1", currency="US")
        message = "Currency must be 3 to 10 letters or digits"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.currency", "message": message}],
        }

    async def test_unknown_fields_are_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/transfers",
            json={
                "from_merchant": "a",
                "to_merchant": "b",
                "amount": "1",
                "currency": "USD",
                "x": 1,
            },
            headers={"Idempotency-Key": unique()},
        )
        assert response.json() == {
            "status": 422,
            "error": ["Extra inputs are not permitted"],
            "details": [{"field": "body.x", "message": "Extra inputs are not permitted"}],
        }


class TestIdempotency:
    async def test_replay_returns_the_same_transfer(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        key = unique("key")
        first = await submit(client, sender["name"], receiver["name"], 0.1, currency="usd", key=key)
        transfer_id = first.json()["result"]["id"]
        await settle(client, [transfer_id])
        replay = await submit(
            client, sender["name"], receiver["name"], "0.10", currency="USD", key=key
        )
        assert replay.status_code == 200  # final now
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["result"]["id"] == transfer_id
        assert replay.json()["result"]["state"] == "completed"
        assert await balance_of(client, sender["name"]) == Decimal("9.9")
        assert_ledger_consistent(sync_db)

    async def test_same_key_different_request_is_422(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        key = unique("key")
        await submit(client, sender["name"], receiver["name"], "1", key=key)
        response = await submit(client, sender["name"], receiver["name"], "2", key=key)
        assert response.status_code == 422
        message = f"Idempotency-Key {key} was already used for a different request"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "header.Idempotency-Key", "message": message}],
        }

    async def test_replay_wins_over_a_refusal_that_came_later(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        key = unique("key")
        first = await submit(client, sender["name"], receiver["name"], "1", key=key)
        archive(sync_db, receiver["id"])
        replay = await submit(client, sender["name"], receiver["name"], "1", key=key)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["result"]["id"] == first.json()["result"]["id"]
        other = await submit(client, sender["name"], receiver["name"], "2", key=key)
        assert other.status_code == 422

    async def test_failed_outcome_is_stable(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "1")
        receiver = await create_merchant(client)
        key = unique("key")
        first = await submit(client, sender["name"], receiver["name"], "5", key=key)
        (failed,) = await settle(client, [first.json()["result"]["id"]])
        assert failed["state"] == "failed"
        replay = await submit(client, sender["name"], receiver["name"], "5", key=key)
        assert replay.status_code == 200
        assert replay.json()["result"] == failed

    async def test_concurrent_requests_with_one_key_make_one_transfer(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "1000")
        receiver = await create_merchant(client)
        key = unique("key")
        responses = await asyncio.gather(
            *(submit(client, sender["name"], receiver["name"], "10", key=key) for _ in range(50))
        )
        assert {r.status_code for r in responses} <= {200, 202}
        ids = {r.json()["result"]["id"] for r in responses}
        assert len(ids) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
        await settle(client, list(ids))
        assert await balance_of(client, sender["name"]) == Decimal("990")
        sql = "SELECT count(*) FROM transfers WHERE idempotency_key = :key"
        assert count(sync_db, sql, key=key) == 1
        assert_ledger_consistent(sync_db)


class TestPreferWait:
    async def test_waits_for_the_final_state(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        response = await submit(
            client, sender["name"], receiver["name"], "1", headers={"Prefer": "wait=10"}
        )
        assert response.status_code == 200
        assert response.headers["preference-applied"] == "wait=10"
        assert response.json()["status"] == 200
        assert response.json()["result"]["state"] == "completed"

    async def test_wait_is_capped_at_thirty_seconds(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        response = await submit(
            client,
            sender["name"],
            receiver["name"],
            "1",
            headers={"Prefer": "respond-async, wait=3600"},
        )
        assert response.headers["preference-applied"] == "wait=30"
        assert response.status_code == 200

    async def test_zero_wait_answers_pending(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        response = await submit(
            client, sender["name"], receiver["name"], "1", headers={"Prefer": "wait=0"}
        )
        assert response.status_code == 202
        assert response.headers["preference-applied"] == "wait=0"


class TestGetTransfer:
    async def test_unknown_is_404(self, client: httpx.AsyncClient) -> None:
        missing = uuid.uuid4()
        response = await client.get(f"/transfers/{missing}")
        assert response.status_code == 404
        assert response.json() == {"status": 404, "error": f"Transfer {missing} does not exist"}

    async def test_malformed_id_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/transfers/not-a-uuid")
        assert response.status_code == 422
        assert response.json()["status"] == 422
