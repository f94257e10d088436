"""Merchants and balances through the API, against real PostgreSQL."""

import uuid

import httpx

from tests.helpers import create_merchant, open_balance, unique


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
