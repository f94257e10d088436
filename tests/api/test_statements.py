"""GET /v1/merchants/{name}/statement: a balance's journal over a window, against real PostgreSQL
and real workers: the shape, signed amounts, windows, pages that stay consistent while transfers
settle, who may read it, and every refusal."""

from __future__ import annotations

import asyncio
import base64
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.domain.statements import StatementCursor, VersionRange
from tests.helpers import (
    balance_of,
    create_merchant,
    funded_merchant,
    open_balance,
    settle,
    submit,
    unique,
)

Page = dict[str, Any]


async def statement(
    client: httpx.AsyncClient,
    name: str,
    headers: dict[str, str] | None = None,
    prefix: str = "/v1",
    /,
    **params: str,
) -> httpx.Response:
    return await client.get(f"{prefix}/merchants/{name}/statement", params=params, headers=headers)


async def read(client: httpx.AsyncClient, name: str, **params: str) -> Page:
    """One page, which must be a 200."""
    response = await statement(client, name, **params)
    assert response.status_code == 200, response.text
    body: Page = response.json()
    return body


async def walk(client: httpx.AsyncClient, name: str, limit: int, **params: str) -> list[Page]:
    """Every page of a statement, following `next_cursor` with the same parameters."""
    pages = [await read(client, name, limit=str(limit), **params)]
    while pages[-1]["next_cursor"] is not None:
        cursor = pages[-1]["next_cursor"]
        pages.append(await read(client, name, limit=str(limit), cursor=cursor, **params))
    return pages


def entries_of(pages: list[Page]) -> list[dict[str, Any]]:
    return [entry for page in pages for entry in page["result"]["entries"]]


def assert_consistent(pages: list[Page]) -> None:
    """The same window and balances on every page; the entries chain from the opening balance
    to the closing one, none repeated."""
    first = pages[0]["result"]
    for page in pages:
        assert page["status"] == 200
        assert {k: v for k, v in page["result"].items() if k != "entries"} == {
            k: v for k, v in first.items() if k != "entries"
        }
    balance = Decimal(first["opening_balance"])
    total = Decimal(0)
    entries = entries_of(pages)
    for entry in entries:
        balance += Decimal(entry["amount"])
        total += Decimal(entry["amount"])
        assert Decimal(entry["balance_after"]) == balance, entry
    assert Decimal(first["opening_balance"]) + total == Decimal(first["closing_balance"])
    transfers = [entry["transfer_id"] for entry in entries if entry["transfer_id"] is not None]
    assert len(transfers) == len(set(transfers))
    posted = [entry["posted"] for entry in entries]
    assert posted == sorted(posted, key=datetime.fromisoformat)


async def transfer(
    client: httpx.AsyncClient, sender: str, receiver: str, amount: str, currency: str = "USD"
) -> dict[str, Any]:
    """Submit a transfer and wait until a worker has applied it."""
    response = await submit(client, sender, receiver, amount, currency=currency)
    assert response.status_code == 202, response.text
    (final,) = await settle(client, [response.json()["result"]["id"]])
    return final


async def new_key(client: httpx.AsyncClient, merchant: str, scope: str = "read") -> dict[str, str]:
    response = await client.post(
        "/v1/api-keys", json={"name": unique("key"), "merchant": merchant, "scope": scope}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['result']['secret']}"}


def shifted(moment: str, hours: int) -> str:
    """The same instant written with another UTC offset."""
    zone = timezone(timedelta(hours=hours))
    return datetime.fromisoformat(moment).astimezone(zone).isoformat()


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TestShape:
    async def test_a_new_balance_shows_its_initial_amount(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await funded_merchant(api_client, "100", currency="BTC")
        body = await read(api_client, merchant["name"], currency="btc")
        posted = body["result"]["entries"][0]["posted"]
        assert posted.endswith("Z")
        assert body == {
            "status": 200,
            "result": {
                "merchant": merchant["name"],
                "currency": "BTC",
                "from": None,
                "to": None,
                "opening_balance": "0.00000000",
                "closing_balance": "100.00000000",
                "entries": [
                    {
                        "transfer_id": None,
                        "kind": "initial",
                        "amount": "100.00000000",
                        "balance_after": "100.00000000",
                        "posted": posted,
                    }
                ],
            },
            "next_cursor": None,
        }

    async def test_a_balance_opened_empty_has_no_entries(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client)
        await open_balance(api_client, merchant["id"], "USD", "0")
        result = (await read(api_client, merchant["name"], currency="USD"))["result"]
        assert result["entries"] == []
        assert result["opening_balance"] == result["closing_balance"] == "0.00000000"

    async def test_the_unversioned_path_is_an_alias(self, api_client: httpx.AsyncClient) -> None:
        merchant = await funded_merchant(api_client, "7")
        versioned = await statement(api_client, merchant["name"], currency="USD")
        alias = await statement(api_client, merchant["name"], None, "", currency="USD")
        assert alias.status_code == versioned.status_code == 200
        assert alias.json() == versioned.json()

    async def test_openapi_documents_the_route_and_its_errors(
        self, api_client: httpx.AsyncClient
    ) -> None:
        spec = (await api_client.get("/openapi.json")).json()
        operation = spec["paths"]["/v1/merchants/{merchant_name}/statement"]["get"]
        assert {"401", "404", "422", "429", "503"} <= set(operation["responses"])
        parameters = {p["name"]: p["required"] for p in operation["parameters"]}
        assert parameters == {
            "merchant_name": True,
            "currency": True,
            "from": False,
            "to": False,
            "limit": False,
            "cursor": False,
        }
        read_schema = spec["components"]["schemas"]["StatementRead"]
        assert {"from", "to", "opening_balance", "closing_balance"} <= set(
            read_schema["properties"]
        )


@pytest.fixture(scope="module")
async def traded(client: httpx.AsyncClient) -> dict[str, Any]:
    """alice (2% fee, 100 USD) and bob (no USD yet): alice -> bob 10, alice -> bob 1000 (fails),
    bob -> alice 3, each settled before the next is submitted."""
    alice = await funded_merchant(client, "100", percent_fee="2")
    bob = await create_merchant(client)
    first = await transfer(client, alice["name"], bob["name"], "10")
    failed = await transfer(client, alice["name"], bob["name"], "1000")
    back = await transfer(client, bob["name"], alice["name"], "3")
    assert [first["state"], failed["state"], back["state"]] == ["completed", "failed", "completed"]
    return {"alice": alice, "bob": bob, "first": first, "failed": failed, "back": back}


class TestEntries:
    async def test_sender_and_receiver_entries_are_signed(
        self, client: httpx.AsyncClient, traded: dict[str, Any]
    ) -> None:
        alice, bob = traded["alice"]["name"], traded["bob"]["name"]
        first, back = traded["first"]["id"], traded["back"]["id"]
        alice_entries = (await read(client, alice, currency="USD"))["result"]["entries"]
        assert [
            (e["kind"], e["transfer_id"], e["amount"], e["balance_after"]) for e in alice_entries
        ] == [
            ("initial", None, "100.00000000", "100.00000000"),
            ("transfer", first, "-10.20000000", "89.80000000"),
            ("transfer", back, "3.00000000", "92.80000000"),
        ]
        bob_page = await read(client, bob, currency="USD")
        assert [
            (e["transfer_id"], e["amount"], e["balance_after"])
            for e in bob_page["result"]["entries"]
        ] == [
            (first, "10.00000000", "10.00000000"),
            (back, "-3.00000000", "7.00000000"),
        ]
        assert bob_page["result"]["opening_balance"] == "0.00000000"
        assert bob_page["result"]["closing_balance"] == "7.00000000"

    async def test_closing_balance_is_the_current_balance(
        self, client: httpx.AsyncClient, traded: dict[str, Any]
    ) -> None:
        for merchant in (traded["alice"], traded["bob"]):
            pages = await walk(client, merchant["name"], 100, currency="USD")
            assert_consistent(pages)
            closing = Decimal(pages[0]["result"]["closing_balance"])
            assert closing == await balance_of(client, merchant["name"])


class TestWindow:
    async def test_from_is_inclusive_and_to_exclusive(
        self, client: httpx.AsyncClient, traded: dict[str, Any]
    ) -> None:
        alice = traded["alice"]["name"]
        full = (await read(client, alice, currency="USD"))["result"]["entries"]
        posted = [entry["posted"] for entry in full]
        balances = [entry["balance_after"] for entry in full]

        body = await read(client, alice, currency="USD", **{"from": posted[1], "to": posted[2]})
        result = body["result"]
        assert (result["from"], result["to"]) == (posted[1], posted[2])
        assert result["entries"] == full[1:2]
        assert (result["opening_balance"], result["closing_balance"]) == (balances[0], balances[1])

        result = (await read(client, alice, currency="USD", **{"from": posted[1]}))["result"]
        assert result["entries"] == full[1:] and result["to"] is None
        assert (result["opening_balance"], result["closing_balance"]) == (balances[0], balances[2])

        result = (await read(client, alice, currency="USD", to=posted[1]))["result"]
        assert result["entries"] == full[:1] and result["from"] is None
        assert (result["opening_balance"], result["closing_balance"]) == ("0.00000000", balances[0])

    async def test_a_window_without_postings(
        self, client: httpx.AsyncClient, traded: dict[str, Any]
    ) -> None:
        alice = traded["alice"]["name"]
        full = (await read(client, alice, currency="USD"))["result"]["entries"]
        last = datetime.fromisoformat(full[-1]["posted"])
        after_all = utc(last + timedelta(microseconds=1))
        result = (await read(client, alice, currency="USD", **{"from": after_all}))["result"]
        assert result["entries"] == []
        assert result["opening_balance"] == result["closing_balance"] == full[-1]["balance_after"]

        before_all = {"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}
        result = (await read(client, alice, currency="USD", **before_all))["result"]
        assert result["entries"] == []
        assert result["opening_balance"] == result["closing_balance"] == "0.00000000"

    async def test_the_widest_window_holds_everything(
        self, client: httpx.AsyncClient, traded: dict[str, Any]
    ) -> None:
        alice = traded["alice"]["name"]
        full = (await read(client, alice, currency="USD"))["result"]
        widest = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"}
        result = (await read(client, alice, currency="USD", **widest))["result"]
        assert result["entries"] == full["entries"]
        assert result["closing_balance"] == full["closing_balance"]
        assert (result["from"], result["to"]) == ("0001-01-01T00:00:00Z", widest["to"])

    async def test_any_offset_names_the_same_instant_and_echoes_in_utc(
        self, client: httpx.AsyncClient, traded: dict[str, Any]
    ) -> None:
        alice = traded["alice"]["name"]
        full = (await read(client, alice, currency="USD"))["result"]["entries"]
        posted = full[1]["posted"]
        result = (await read(client, alice, currency="USD", **{"from": shifted(posted, 2)}))[
            "result"
        ]
        assert result["from"] == posted
        assert result["entries"] == full[1:]


async def statement_of(client: httpx.AsyncClient, entries: int) -> str:
    """A merchant whose USD balance has `entries` entries (its initial amount, then transfers
    in and out, each settled before the next)."""
    merchant = await funded_merchant(client, "1000")
    other = await funded_merchant(client, "1000")
    for index in range(entries - 1):
        sender, receiver = (merchant, other) if index % 2 else (other, merchant)
        assert (await transfer(client, sender["name"], receiver["name"], f"{index + 1}"))[
            "state"
        ] == "completed"
    name: str = merchant["name"]
    return name


class TestPagination:
    async def test_every_limit_walks_every_entry_once(self, client: httpx.AsyncClient) -> None:
        entries = 5
        name = await statement_of(client, entries)
        full = (await read(client, name, currency="USD"))["result"]["entries"]
        assert len(full) == entries
        for limit in range(1, entries + 2):
            pages = await walk(client, name, limit, currency="USD")
            assert len(pages) == max(1, math.ceil(entries / limit)), limit
            sizes = [len(page["result"]["entries"]) for page in pages]
            assert sizes[:-1] == [limit] * (len(pages) - 1) and 0 < sizes[-1] <= limit
            assert entries_of(pages) == full, limit
            assert_consistent(pages)

    async def test_a_window_pages_the_same_way(self, client: httpx.AsyncClient) -> None:
        name = await statement_of(client, 5)
        full = (await read(client, name, currency="USD"))["result"]["entries"]
        window = {"from": full[1]["posted"], "to": full[4]["posted"]}
        pages = await walk(client, name, 1, currency="USD", **window)
        assert len(pages) == 3
        assert entries_of(pages) == full[1:4]
        assert_consistent(pages)
        assert pages[0]["result"]["opening_balance"] == full[0]["balance_after"]
        assert pages[-1]["result"]["closing_balance"] == full[3]["balance_after"]

    async def test_transfers_settled_between_pages_change_no_page(
        self, client: httpx.AsyncClient
    ) -> None:
        """The window is pinned on the first page: what settles later belongs to later
        statements, and the pages already promised stay as they were."""
        name = await statement_of(client, 4)
        other = await funded_merchant(client, "1000")
        before = (await read(client, name, currency="USD"))["result"]
        pages = [await read(client, name, currency="USD", limit="1")]
        while pages[-1]["next_cursor"] is not None:
            await transfer(client, other["name"], name, "5")
            await transfer(client, name, other["name"], "2")
            params = {"limit": "1", "cursor": pages[-1]["next_cursor"]}
            pages.append(await read(client, name, currency="USD", **params))
        assert len(pages) == 4
        assert_consistent(pages)
        assert entries_of(pages) == before["entries"]
        assert pages[0]["result"]["closing_balance"] == before["closing_balance"]
        after = (await read(client, name, currency="USD"))["result"]
        assert after["entries"][:4] == before["entries"] and len(after["entries"]) == 10

    async def test_pages_stay_consistent_while_transfers_settle(
        self, client: httpx.AsyncClient
    ) -> None:
        """Walk the statement with limit=2, again and again, while transfers in and out of
        the balance keep being applied by the workers: every walk is consistent, and what it
        saw is exactly the start of the journal as it ends up."""
        name = await statement_of(client, 3)
        other = await funded_merchant(client, "1000")
        moves = 40

        async def keep_transferring() -> None:
            ids = []
            for index in range(moves):
                sender, receiver = (name, other["name"]) if index % 2 else (other["name"], name)
                response = await submit(client, sender, receiver, "1.5")
                assert response.status_code == 202, response.text
                ids.append(response.json()["result"]["id"])
                await asyncio.sleep(0.01)
            assert {t["state"] for t in await settle(client, ids)} == {"completed"}

        writer = asyncio.create_task(keep_transferring())
        walks: list[list[Page]] = []
        while not writer.done() or len(walks) < 3:
            walks.append(await walk(client, name, 2, currency="USD"))
        await writer
        final = (await read(client, name, currency="USD", limit="1000"))["result"]
        assert len(final["entries"]) == 3 + moves
        for pages in walks:
            assert_consistent(pages)
            seen = entries_of(pages)
            assert seen == final["entries"][: len(seen)]
            if seen:
                assert pages[0]["result"]["closing_balance"] == seen[-1]["balance_after"]


class TestAccess:
    async def test_a_merchant_key_reads_its_own_statement(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await funded_merchant(api_client, "3")
        for scope in ("read", "write"):
            headers = await new_key(api_client, merchant["name"], scope)
            response = await statement(api_client, merchant["name"], headers, currency="USD")
            assert response.status_code == 200, response.text
            assert response.json()["result"]["closing_balance"] == "3.00000000"

    async def test_another_merchants_statement_does_not_exist(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await funded_merchant(api_client, "3")
        stranger = await funded_merchant(api_client, "3")
        headers = await new_key(api_client, stranger["name"], "write")
        for name in (merchant["name"], unique("nobody")):
            response = await statement(api_client, name, headers, currency="USD")
            assert response.status_code == 404
            assert response.json() == {"status": 404, "error": f"Merchant {name} does not exist"}

    async def test_no_key_is_401(self, api_client: httpx.AsyncClient) -> None:
        merchant = await funded_merchant(api_client, "3")
        response = await statement(
            api_client, merchant["name"], {"Authorization": ""}, currency="USD"
        )
        assert response.status_code == 401
        assert response.json() == {"status": 401, "error": "Missing or invalid API key"}
        assert response.headers["WWW-Authenticate"] == "Bearer"


def error_422(field: str, message: str) -> dict[str, Any]:
    return {"status": 422, "error": [message], "details": [{"field": field, "message": message}]}


class TestRefusals:
    async def test_unknown_merchant_and_currency_are_404(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await funded_merchant(api_client, "3")
        nobody = unique("nobody")
        response = await statement(api_client, nobody, currency="USD")
        assert response.status_code == 404
        assert response.json() == {"status": 404, "error": f"Merchant {nobody} does not exist"}
        response = await statement(api_client, merchant["name"], currency="eur")
        assert response.status_code == 404
        assert response.json() == {
            "status": 404,
            "error": "Merchant balance with currency EUR does not exist",
        }

    async def test_currency_is_required_and_checked(self, api_client: httpx.AsyncClient) -> None:
        merchant = await funded_merchant(api_client, "3")
        response = await statement(api_client, merchant["name"])
        assert response.json() == error_422("query.currency", "Field required")
        response = await statement(api_client, merchant["name"], currency="$$")
        assert response.json() == error_422(
            "query.currency", "Currency must be 3 to 10 letters or digits"
        )

    @pytest.mark.parametrize(
        "moment", ["2025-01-15T09:30:00", "2025-01-15", "yesterday", "", "0001-01-01T00:00+01:00"]
    )
    async def test_a_time_without_timezone_or_not_a_time_is_422(
        self, api_client: httpx.AsyncClient, moment: str
    ) -> None:
        merchant = await funded_merchant(api_client, "3")
        for name in ("from", "to"):
            response = await statement(
                api_client, merchant["name"], currency="USD", **{name: moment}
            )
            assert response.json() == error_422(
                f"query.{name}",
                f"{name} must be an ISO 8601 time with a timezone, e.g. 2025-01-15T09:30:00Z",
            )

    async def test_from_must_be_earlier_than_to(self, api_client: httpx.AsyncClient) -> None:
        merchant = await funded_merchant(api_client, "3")
        for start, end in [
            ("2025-01-02T00:00:00Z", "2025-01-01T00:00:00Z"),
            ("2025-01-01T00:00:00Z", "2025-01-01T01:00:00+01:00"),  # the same instant
        ]:
            window = {"from": start, "to": end}
            response = await statement(api_client, merchant["name"], currency="USD", **window)
            assert response.json() == error_422("query.to", "from must be earlier than to")

    @pytest.mark.parametrize("limit", ["0", "1001", "x", "-1"])
    async def test_a_bad_limit_is_422(self, api_client: httpx.AsyncClient, limit: str) -> None:
        merchant = await funded_merchant(api_client, "3")
        response = await statement(api_client, merchant["name"], currency="USD", limit=limit)
        assert response.status_code == 422
        assert [d["field"] for d in response.json()["details"]] == ["query.limit"]

    @pytest.mark.parametrize(
        "raw",
        [
            "1.2.3",  # no scope
            "not.a.cursor.at-all",
            "0.99999999999999999999.0.scope",  # beyond any BIGINT
            "2.1.1.scope",  # low above high
            "0.2.2.scope",  # nothing left after the last version
        ],
    )
    async def test_a_forged_cursor_is_422(self, api_client: httpx.AsyncClient, raw: str) -> None:
        merchant = await funded_merchant(api_client, "3")
        cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        response = await statement(api_client, merchant["name"], currency="USD", cursor=cursor)
        assert response.json() == error_422("query.cursor", "Invalid cursor")

    @pytest.mark.parametrize("cursor", ["!!not-a-cursor", "%%%", "x" * 201, "é"])
    async def test_a_malformed_cursor_is_422(
        self, api_client: httpx.AsyncClient, cursor: str
    ) -> None:
        merchant = await funded_merchant(api_client, "3")
        response = await statement(api_client, merchant["name"], currency="USD", cursor=cursor)
        assert response.status_code == 422
        assert [d["field"] for d in response.json()["details"]] == ["query.cursor"]

    async def test_a_cursor_continues_only_its_own_statement(
        self, client: httpx.AsyncClient
    ) -> None:
        name = await statement_of(client, 3)
        merchant = (await client.get(f"/v1/merchants/{name}")).json()["result"]
        await open_balance(client, merchant["id"], "BTC", "1")
        other = await funded_merchant(client, "3")
        window = {"from": "2000-01-01T00:00:00Z"}
        cursor = (await read(client, name, currency="USD", limit="1", **window))["next_cursor"]
        assert cursor is not None
        same = {"currency": "USD", "limit": "1", "cursor": cursor}
        assert (await statement(client, name, **same, **window)).status_code == 200
        for target, params in [
            (name, {**same, "currency": "BTC", **window}),  # another balance of the merchant
            (other["name"], {**same, **window}),  # another merchant's balance
            (name, same),  # without the window it was made for
            (name, {**same, "from": "2000-01-01T00:00:01Z"}),  # another window
            (name, {**same, **window, "to": "2100-01-01T00:00:00Z"}),
        ]:
            response = await statement(client, target, **params)
            assert response.json() == error_422("query.cursor", "Invalid cursor"), params

    async def test_a_cursor_beyond_the_balance_is_422(self, client: httpx.AsyncClient) -> None:
        name = await statement_of(client, 2)
        cursor = (await read(client, name, currency="USD", limit="1"))["next_cursor"]
        real = StatementCursor.decode(cursor)
        forged = StatementCursor(VersionRange(0, 10**6), 1, real.scope).encode()
        response = await statement(client, name, currency="USD", cursor=forged)
        assert response.json() == error_422("query.cursor", "Invalid cursor")
