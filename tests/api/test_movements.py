"""Deposits and withdrawals (SPEC Part 2, Movements): every rule and message, end to end with the
session's workers; what posts is checked through balances, fee accounts and the audit."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shared.infra.database import SyncDatabase
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    settle,
    unique,
)

pytestmark = pytest.mark.integration


async def move(
    client: httpx.AsyncClient,
    kind: str,
    merchant: str,
    amount: Any,
    currency: str = "USD",
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        f"/v1/{kind}",
        json={"merchant": merchant, "amount": amount, "currency": currency},
        headers={"Idempotency-Key": key or unique("key"), **(headers or {})},
    )


def fresh_currency() -> str:
    """A currency no other test uses, so its issuance account is this test's alone."""
    return "T" + uuid.uuid4().hex[:9].upper()


def issuance(db: SyncDatabase, currency: str) -> Decimal:
    with db.transaction() as connection:
        amount = connection.execute(
            text("SELECT amount FROM accounts WHERE kind = 'issuance' AND currency = :c"),
            {"c": currency},
        ).scalar_one()
    return Decimal(amount)


async def merchant_key(client: httpx.AsyncClient, merchant: str, scope: str = "write") -> str:
    response = await client.post(
        "/v1/api-keys", json={"name": unique("k"), "merchant": merchant, "scope": scope}
    )
    assert response.status_code == 200, response.text
    secret: str = response.json()["result"]["secret"]
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class TestDeposits:
    async def test_credits_the_merchant_and_debits_issuance(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        merchant = await funded_merchant(client, "10", percent_fee="3")
        currency = fresh_currency()
        first = await move(client, "deposits", merchant["name"], "1", currency)
        await settle(client, [first.json()["result"]["id"]])
        assert issuance(sync_db, currency) == Decimal("-1")
        response = await move(client, "deposits", merchant["name"], "2.5", currency)
        assert response.status_code == 202
        deposit = response.json()["result"]
        assert response.headers["Location"] == f"/v1/transfers/{deposit['id']}"
        assert deposit["kind"] == "deposit"
        assert deposit["from_merchant_id"] is None
        assert deposit["to_merchant_id"] == merchant["id"]
        assert (deposit["fee"], deposit["percent_fee"]) == ("0.00000000", "0.00")
        assert (deposit["reverses"], deposit["reversed_amount"]) == (None, None)
        (settled,) = await settle(client, [deposit["id"]])
        assert settled["state"] == "completed"
        assert await balance_of(client, merchant["name"], currency) == Decimal("3.5")
        assert issuance(sync_db, currency) == Decimal("-3.5")
        assert_ledger_consistent(sync_db)

    async def test_opens_a_missing_balance(self, client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(client)
        response = await move(client, "deposits", merchant["name"], "7", "EUR")
        assert response.status_code == 202
        await settle(client, [response.json()["result"]["id"]])
        assert await balance_of(client, merchant["name"], "EUR") == Decimal("7")

    async def test_prefer_wait_answers_final(self, client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(client)
        response = await move(
            client, "deposits", merchant["name"], "1", headers={"Prefer": "wait=10"}
        )
        assert response.status_code == 200
        assert response.json()["result"]["state"] == "completed"
        assert response.headers["Preference-Applied"] == "wait=10"

    async def test_is_admin_only(self, client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(client)
        secret = await merchant_key(client, merchant["name"])
        response = await move(client, "deposits", merchant["name"], "1", headers=bearer(secret))
        assert response.status_code == 403

    async def test_unknown_merchant(self, client: httpx.AsyncClient) -> None:
        response = await move(client, "deposits", "nobody-here", "1")
        assert response.status_code == 404
        assert response.json()["error"] == "Merchant nobody-here does not exist"

    async def test_archived_merchant(self, client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(client)
        patched = await client.patch(f"/v1/merchants/{merchant['name']}", json={"archived": True})
        assert patched.status_code == 200
        response = await move(client, "deposits", merchant["name"], "1")
        assert response.status_code == 400
        assert response.json()["error"] == f"Merchant {merchant['name']} is archived"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"merchant": "a", "amount": "0", "currency": "USD"}, "body.amount"),
            ({"merchant": "a", "amount": "-1", "currency": "USD"}, "body.amount"),
            ({"merchant": "a", "amount": "1.000000001", "currency": "USD"}, "body.amount"),
            ({"merchant": "a", "amount": "1", "currency": "U$"}, "body.currency"),
            ({"amount": "1", "currency": "USD"}, "body.merchant"),
        ],
    )
    async def test_malformed(
        self, api_client: httpx.AsyncClient, body: dict[str, str], field: str
    ) -> None:
        for kind in ("deposits", "withdrawals"):
            response = await api_client.post(
                f"/v1/{kind}", json=body, headers={"Idempotency-Key": unique()}
            )
            assert response.status_code == 422
            assert [d["field"] for d in response.json()["details"]] == [field]

    async def test_requires_an_idempotency_key(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post(
            "/v1/deposits", json={"merchant": "a", "amount": "1", "currency": "USD"}
        )
        assert response.status_code == 422
        assert response.json()["details"][0]["field"] == "header.Idempotency-Key"

    async def test_replays_and_refuses_a_reused_key(self, client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(client)
        key = unique("dep")
        first = await move(client, "deposits", merchant["name"], "0.1", "btc", key=key)
        again = await move(client, "deposits", merchant["name"], "0.10", "BTC", key=key)
        assert again.json()["result"]["id"] == first.json()["result"]["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await move(client, "deposits", merchant["name"], "0.2", "BTC", key=key)
        assert other.status_code == 422
        # The same key for a withdrawal of the same amount is a different request too.
        withdrawal = await move(client, "withdrawals", merchant["name"], "0.1", "BTC", key=key)
        assert withdrawal.status_code == 422


class TestWithdrawals:
    async def test_debits_without_fee_and_credits_issuance(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        currency = fresh_currency()
        merchant = await funded_merchant(client, "10", currency, percent_fee="5")
        response = await move(client, "withdrawals", merchant["name"], "4", currency)
        assert response.status_code == 202
        withdrawal = response.json()["result"]
        assert withdrawal["kind"] == "withdrawal"
        assert withdrawal["from_merchant_id"] == merchant["id"]
        assert withdrawal["to_merchant_id"] is None
        assert (withdrawal["fee"], withdrawal["percent_fee"]) == ("0.00000000", "0.00")
        (settled,) = await settle(client, [withdrawal["id"]])
        assert settled["state"] == "completed"
        assert await balance_of(client, merchant["name"], currency) == Decimal("6")
        assert issuance(sync_db, currency) == Decimal("-6")
        assert_ledger_consistent(sync_db)

    async def test_fails_for_insufficient_funds_moving_nothing(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        merchant = await funded_merchant(client, "10")
        response = await move(client, "withdrawals", merchant["name"], "10.00000001")
        (settled,) = await settle(client, [response.json()["result"]["id"]])
        assert settled["state"] == "failed"
        assert settled["failure_reason"] == "Insufficient funds"
        assert await balance_of(client, merchant["name"]) == Decimal("10")
        exact = await move(client, "withdrawals", merchant["name"], "10")
        (settled,) = await settle(client, [exact.json()["result"]["id"]])
        assert settled["state"] == "completed"
        assert await balance_of(client, merchant["name"]) == Decimal("0")
        assert_ledger_consistent(sync_db)

    async def test_unknown_merchant_and_missing_balance(self, client: httpx.AsyncClient) -> None:
        unknown = await move(client, "withdrawals", "nobody-here", "1")
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "Merchant nobody-here does not exist"
        merchant = await funded_merchant(client, "10")
        missing = await move(client, "withdrawals", merchant["name"], "1", "EUR")
        assert missing.status_code == 404
        assert missing.json()["error"] == "Merchant balance with currency EUR does not exist"

    async def test_archived_merchant(self, client: httpx.AsyncClient) -> None:
        merchant = await funded_merchant(client, "10")
        await client.patch(f"/v1/merchants/{merchant['name']}", json={"archived": True})
        response = await move(client, "withdrawals", merchant["name"], "1")
        assert response.status_code == 400
        assert response.json()["error"] == f"Merchant {merchant['name']} is archived"

    async def test_the_merchants_write_key_may_and_no_one_else(
        self, client: httpx.AsyncClient
    ) -> None:
        merchant = await funded_merchant(client, "10")
        other = await funded_merchant(client, "10")
        own = await merchant_key(client, merchant["name"])
        read_only = await merchant_key(client, merchant["name"], scope="read")
        foreign = await merchant_key(client, other["name"])
        allowed = await move(client, "withdrawals", merchant["name"], "1", headers=bearer(own))
        assert allowed.status_code == 202
        refused = await move(client, "withdrawals", merchant["name"], "1", headers=bearer(foreign))
        assert refused.status_code == 403
        assert refused.json()["error"] == f"API key may not act for merchant {merchant['name']}"
        read = await move(client, "withdrawals", merchant["name"], "1", headers=bearer(read_only))
        assert read.status_code == 403
        # The merchant sees its withdrawal; the other merchant does not.
        withdrawal_id = allowed.json()["result"]["id"]
        seen = await client.get(f"/v1/transfers/{withdrawal_id}", headers=bearer(own))
        assert seen.status_code == 200
        hidden = await client.get(f"/v1/transfers/{withdrawal_id}", headers=bearer(foreign))
        assert hidden.status_code == 404


async def test_kind_filter(client: httpx.AsyncClient) -> None:
    merchant = await funded_merchant(client, "10")
    deposit = await move(client, "deposits", merchant["name"], "1")
    withdrawal = await move(client, "withdrawals", merchant["name"], "1")
    listed = {}
    for kind in ("deposit", "withdrawal", "transfer"):
        response = await client.get("/v1/transfers", params={"kind": kind, "to": merchant["name"]})
        assert response.status_code == 200
        listed[kind] = {t["id"] for t in response.json()["result"]}
        assert all(t["kind"] == kind for t in response.json()["result"])
    assert deposit.json()["result"]["id"] in listed["deposit"]
    response = await client.get("/v1/transfers", params={"kind": "withdrawal"})
    assert withdrawal.json()["result"]["id"] in {t["id"] for t in response.json()["result"]}
    bad = await client.get("/v1/transfers", params={"kind": "gift"})
    assert bad.status_code == 422
