"""GET /transfers: filters, order, cursor pagination."""

import httpx

from tests.helpers import create_merchant, funded_merchant, settle, submit


class TestListTransfers:
    async def test_filters_combine_and_order_is_newest_first(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await funded_merchant(client, "100", currency="USD")
        await client.post(
            "/merchants/balance",
            json={"merchant_id": alice["id"], "currency": "BTC", "initial_amount": "1"},
        )
        bob = await create_merchant(client)
        carol = await create_merchant(client)
        ids = []
        for receiver, currency, amount in [
            (bob, "USD", "1"),
            (carol, "USD", "2"),
            (bob, "BTC", "0.5"),
            (bob, "USD", "1000"),  # fails: insufficient funds
        ]:
            response = await submit(
                client, alice["name"], receiver["name"], amount, currency=currency
            )
            ids.append(response.json()["result"]["id"])
        await settle(client, ids)

        async def listed(**params: str) -> list[str]:
            response = await client.get("/transfers", params=params)
            assert response.status_code == 200, response.text
            return [t["id"] for t in response.json()["result"]]

        assert await listed(**{"from": alice["name"]}) == ids[::-1]
        assert await listed(**{"from": alice["name"], "to": bob["name"]}) == [
            ids[3],
            ids[2],
            ids[0],
        ]
        assert await listed(**{"from": alice["name"], "currency": "btc"}) == [ids[2]]
        assert await listed(**{"from": alice["name"], "state": "failed"}) == [ids[3]]
        assert await listed(**{"to": carol["name"], "state": "completed"}) == [ids[1]]
        assert await listed(**{"from": "nobody-at-all"}) == []

    async def test_cursor_walks_every_page_once(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        ids = [
            (await submit(client, sender["name"], receiver["name"], "1")).json()["result"]["id"]
            for _ in range(7)
        ]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"from": sender["name"], "limit": "3"}
            if cursor:
                params["cursor"] = cursor
            body = (await client.get("/transfers", params=params)).json()
            seen += [t["id"] for t in body["result"]]
            cursor = body["next_cursor"]
            pages += 1
            if cursor is None:
                break
        assert pages == 3
        assert seen == ids[::-1]

    async def test_bad_cursor_and_limit_are_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/transfers", params={"cursor": "!!not-a-cursor"})
        assert response.json() == {
            "status": 422,
            "error": ["Invalid cursor"],
            "details": [{"field": "query.cursor", "message": "Invalid cursor"}],
        }
        for limit in ("0", "1001", "x"):
            response = await client.get("/transfers", params={"limit": limit})
            assert response.status_code == 422
        response = await client.get("/transfers", params={"state": "lost"})
        assert response.status_code == 422
