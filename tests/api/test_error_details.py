"""SPEC Part 2, "Errors name their input": every 422 keeps `error` as worded and adds one detail
per problem naming where it is — body, header, query, path — and so does a batch item's error."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import create_merchant, unique

JSON = {"Content-Type": "application/json"}


def detailed(*problems: tuple[str, str]) -> dict[str, Any]:
    return {
        "status": 422,
        "error": [message for _, message in problems],
        "details": [{"field": field, "message": message} for field, message in problems],
    }


class TestEachLocation:
    async def test_body_fields(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post(
            "/v1/transfers",
            json={"from_merchant": "a", "amount": "-1", "currency": "BTC"},
            headers={"Idempotency-Key": unique()},
        )
        assert response.json() == detailed(
            ("body.to_merchant", "Field required"),
            ("body.amount", "Amount must be greater than 0"),
        )

    async def test_body_as_a_whole(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post("/v1/merchants", content=b'{"name": ', headers=JSON)
        body = response.json()
        assert body["error"][0].startswith("Invalid JSON")
        assert body["details"] == [{"field": "body", "message": body["error"][0]}]
        response = await api_client.post("/v1/merchants")  # no body at all
        assert response.json() == detailed(("body", "Field required"))

    async def test_header(self, api_client: httpx.AsyncClient) -> None:
        transfer = {"from_merchant": "a", "to_merchant": "b", "amount": "1", "currency": "BTC"}
        response = await api_client.post("/v1/transfers", json=transfer)
        assert response.json() == detailed(("header.Idempotency-Key", "Field required"))
        response = await api_client.post(
            "/v1/transfers", json=transfer, headers={"Idempotency-Key": "two words"}
        )
        assert response.json() == detailed(
            ("header.Idempotency-Key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
        )

    async def test_query(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/v1/transfers", params={"limit": "0", "state": "lost"})
        body = response.json()
        assert response.status_code == 422
        assert [detail["field"] for detail in body["details"]] == ["query.state", "query.limit"]
        assert [detail["message"] for detail in body["details"]] == body["error"]
        response = await api_client.get("/v1/transfers", params={"cursor": "nope"})
        assert response.json() == detailed(("query.cursor", "Invalid cursor"))

    async def test_path(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/v1/transfers/not-a-uuid")
        body = response.json()
        assert response.status_code == 422
        assert body["details"] == [{"field": "path.transfer_id", "message": body["error"][0]}]

    async def test_batch_item(self, api_client: httpx.AsyncClient) -> None:
        sender, receiver = await create_merchant(api_client), await create_merchant(api_client)
        item = {
            "idempotency_key": unique(),
            "from_merchant": sender["name"],
            "to_merchant": receiver["name"],
            "currency": "BTC",
        }
        response = await api_client.post(
            "/v1/batches",
            json={
                "transfers": [
                    {**item, "amount": "x"},
                    {
                        **item,
                        "idempotency_key": "a b",
                        "amount": "1",
                        "to_merchant": sender["name"],
                    },
                ]
            },
        )
        assert response.status_code == 202
        first, second = (entry["error"] for entry in response.json()["result"]["items"])
        assert first == {
            "status": 422,
            "message": ["Amount must be a decimal number"],
            "details": [{"field": "body.amount", "message": "Amount must be a decimal number"}],
        }
        assert second["details"] == [
            {
                "field": "body.idempotency_key",
                "message": "Idempotency-Key must be 1 to 255 visible ASCII characters",
            },
        ]

    async def test_an_empty_batch(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post("/v1/batches", json={"transfers": []})
        body = response.json()
        assert body["details"] == [{"field": "body.transfers", "message": body["error"][0]}]

    async def test_other_errors_have_no_details(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/v1/merchants/nobody-at-all")
        assert response.json() == {"status": 404, "error": "Merchant nobody-at-all does not exist"}
