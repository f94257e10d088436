"""Merchants and balances through the API, against real PostgreSQL."""

import uuid
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from shared.infra.database import SyncDatabase
from shared.services.posting import apply_group
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    open_balance,
    record_pending,
    settle,
    submit,
    unique,
)


class TestCreateMerchant:
    async def test_returns_the_merchant_in_the_envelope(
        self, api_client: httpx.AsyncClient
    ) -> None:
        name = unique("1 merchant")
        response = await api_client.post("/merchants", json={"name": name, "percent_fee": 2.0})
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == 200
        merchant = body["result"]
        assert merchant["name"] == name
        assert merchant["percent_fee"] == "2.00"
        assert merchant["archived"] is False
        assert merchant["created"].endswith("Z") and merchant["updated"].endswith("Z")
        uuid.UUID(merchant["id"])

    async def test_duplicate_name_is_409(self, api_client: httpx.AsyncClient) -> None:
        name = unique()
        await create_merchant(api_client, name=name)
        response = await api_client.post("/merchants", json={"name": name, "percent_fee": "1"})
        assert response.status_code == 409
        assert response.json() == {
            "status": 409,
            "error": f"Merchant with name {name} already exists",
        }

    async def test_names_are_case_sensitive(self, api_client: httpx.AsyncClient) -> None:
        name = unique("Case")
        await create_merchant(api_client, name=name)
        await create_merchant(api_client, name=name.lower())

    async def test_invalid_fields_are_422_with_plain_messages(
        self, api_client: httpx.AsyncClient
    ) -> None:
        response = await api_client.post(
            "/merchants", json={"name": " padded", "percent_fee": "101"}
        )
        assert response.status_code == 422
        assert response.json() == {
            "status": 422,
            "error": [
                "Name must not start or end with a space",
                "Percent fee must be between 0 and 100",
            ],
            "details": [
                {"field": "body.name", "message": "Name must not start or end with a space"},
                {"field": "body.percent_fee", "message": "Percent fee must be between 0 and 100"},
            ],
        }

    async def test_missing_field_is_field_required(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post("/merchants", json={"name": unique()})
        assert response.json() == {
            "status": 422,
            "error": ["Field required"],
            "details": [{"field": "body.percent_fee", "message": "Field required"}],
        }


class TestGetMerchant:
    async def test_includes_balances(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client, "2")
        await open_balance(api_client, merchant["id"], "usd", "1000")
        await open_balance(api_client, merchant["id"], "BTC", "1.5")
        response = await api_client.get(f"/merchants/{merchant['name']}")
        assert response.status_code == 200
        result = response.json()["result"]
        assert result["percent_fee"] == "2.00"
        assert [(b["currency"], b["amount"]) for b in result["balances"]] == [
            ("BTC", "1.50000000"),
            ("USD", "1000.00000000"),
        ]

    async def test_name_with_spaces_in_the_path(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client, name=unique("with space"))
        response = await api_client.get(f"/merchants/{merchant['name']}")
        assert response.json()["result"]["id"] == merchant["id"]

    async def test_unknown_is_404(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/merchants/nobody-here")
        assert response.status_code == 404
        assert response.json() == {"status": 404, "error": "Merchant nobody-here does not exist"}


class TestBalances:
    async def test_open_balance_returns_it(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        balance = await open_balance(api_client, merchant["id"], "usdt", "10.5")
        assert balance["merchant_id"] == merchant["id"]
        assert balance["currency"] == "USDT"
        assert balance["amount"] == "10.50000000"

    async def test_zero_initial_amount_is_allowed(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        balance = await open_balance(api_client, merchant["id"], "EUR", "0")
        assert balance["amount"] == "0.00000000"

    async def test_second_balance_in_a_currency_is_409(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        await open_balance(api_client, merchant["id"], "USD", "1")
        response = await api_client.post(
            "/merchants/balance",
            json={"merchant_id": merchant["id"], "currency": "usd", "initial_amount": "5"},
        )
        assert response.status_code == 409
        assert response.json() == {
            "status": 409,
            "error": "Balance with currency USD already exists",
        }

    async def test_unknown_merchant_is_404(self, api_client: httpx.AsyncClient) -> None:
        missing = str(uuid.uuid4())
        response = await api_client.post(
            "/merchants/balance",
            json={"merchant_id": missing, "currency": "USD", "initial_amount": "5"},
        )
        assert response.status_code == 404
        assert response.json()["error"] == f"Merchant {missing} does not exist"

    async def test_negative_initial_amount_is_422(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        response = await api_client.post(
            "/merchants/balance",
            json={"merchant_id": merchant["id"], "currency": "USD", "initial_amount": "-1"},
        )
        message = "Initial amount must be greater than or equal to 0"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.initial_amount", "message": message}],
        }

    async def test_list_balances(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        await open_balance(api_client, merchant["id"], "USD", "3")
        response = await api_client.get(f"/merchants/{merchant['name']}/balance")
        assert response.status_code == 200
        assert [b["amount"] for b in response.json()["result"]] == ["3.00000000"]

    async def test_list_balances_of_unknown_merchant_is_404(
        self, api_client: httpx.AsyncClient
    ) -> None:
        response = await api_client.get("/merchants/nobody-here/balance")
        assert response.status_code == 404


class TestUpdateMerchant:
    async def test_a_new_fee_applies_to_later_transfers_only(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "1000", percent_fee="1")
        receiver = await create_merchant(client)
        (earlier,) = await record_pending(
            app.state.database, [(sender["name"], receiver["name"], Decimal(100))]
        )
        response = await client.patch(f"/v1/merchants/{sender['name']}", json={"percent_fee": 5})
        assert response.status_code == 200
        changed = response.json()["result"]
        assert changed["percent_fee"] == "5.00" and changed["updated"] > sender["updated"]
        later = await submit(client, sender["name"], receiver["name"], "100")
        apply_group(sync_db, [earlier.id])
        (first, second) = await settle(client, [str(earlier.id), later.json()["result"]["id"]])
        assert (first["fee"], first["percent_fee"]) == ("1.00000000", "1.00")
        assert (second["fee"], second["percent_fee"]) == ("5.00000000", "5.00")
        assert await balance_of(client, sender["name"]) == Decimal("1000") - 101 - 105
        assert_ledger_consistent(sync_db)

    async def test_an_archived_merchant_neither_sends_nor_receives_until_unarchived(
        self, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(client, "100")
        other = await funded_merchant(client, "100")
        archived = await client.patch(f"/v1/merchants/{sender['name']}", json={"archived": True})
        assert archived.json()["result"]["archived"] is True
        for payer, payee in ((sender, other), (other, sender)):
            refused = await submit(client, payer["name"], payee["name"], "1")
            assert (refused.status_code, refused.json()["error"]) == (
                400,
                f"Merchant {sender['name']} is archived",
            )
        await client.patch(f"/v1/merchants/{sender['name']}", json={"archived": False})
        assert (await submit(client, sender["name"], other["name"], "1")).status_code == 202

    async def test_pending_transfers_of_an_archived_merchant_still_settle(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        (pending,) = await record_pending(
            app.state.database, [(sender["name"], receiver["name"], Decimal(10))]
        )
        await client.patch(f"/v1/merchants/{sender['name']}", json={"archived": True})
        assert apply_group(sync_db, [pending.id]).completed == [pending.id]
        assert await balance_of(client, receiver["name"]) == Decimal(10)

    async def test_nothing_to_change_changes_nothing(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client, percent_fee="2")
        response = await api_client.patch(f"/v1/merchants/{merchant['name']}", json={})
        assert response.status_code == 200
        assert response.json()["result"] == {**merchant, "balances": [], "limits": []}

    async def test_an_unknown_merchant_is_404(self, api_client: httpx.AsyncClient) -> None:
        name = unique("ghost")
        response = await api_client.patch(f"/v1/merchants/{name}", json={"archived": True})
        assert (response.status_code, response.json()["error"]) == (
            404,
            f"Merchant {name} does not exist",
        )

    @pytest.mark.parametrize(
        ("body", "field", "message"),
        [
            ({"percent_fee": "101"}, "body.percent_fee", "Percent fee must be between 0 and 100"),
            ({"archived": "yes"}, "body.archived", "Input should be a valid boolean"),
            ({"name": "renamed"}, "body.name", "Extra inputs are not permitted"),
        ],
    )
    async def test_invalid_changes_are_422_naming_the_field(
        self, api_client: httpx.AsyncClient, body: dict[str, object], field: str, message: str
    ) -> None:
        merchant = await create_merchant(api_client)
        response = await api_client.patch(f"/v1/merchants/{merchant['name']}", json=body)
        assert response.status_code == 422
        assert response.json()["error"] == [message]
        assert response.json()["details"] == [{"field": field, "message": message}]
