"""Cross-currency transfers (SPEC Part 3, FX) through the API, with the session's workers: the
rate table, conversions and their postings, every refusal and message, and the audit.

Every test converts between currencies of its own (`fresh_currency`), so the FX accounts it
reads move with its transfers only.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shared.infra.database import SyncDatabase
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    count,
    create_merchant,
    funded_merchant,
    settle,
    unique,
)

pytestmark = pytest.mark.integration

FORBIDDEN = {"status": 403, "error": "Forbidden"}


def fresh_currency() -> str:
    return "X" + uuid.uuid4().hex[:9].upper()


async def put_rate(
    client: httpx.AsyncClient,
    base: str,
    quote: str,
    rate: Any,
    headers: dict[str, str] | None = None,
    prefix: str = "/v1",
) -> httpx.Response:
    return await client.put(
        f"{prefix}/fx-rates/{base}/{quote}", json={"rate": rate}, headers=headers
    )


async def set_rate(client: httpx.AsyncClient, base: str, quote: str, rate: Any) -> dict[str, Any]:
    response = await put_rate(client, base, quote, rate)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def convert(
    client: httpx.AsyncClient,
    sender: str,
    receiver: str,
    amount: Any,
    currency: str,
    to_currency: str | None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"from_merchant": sender, "to_merchant": receiver, "amount": amount}
    body["currency"] = currency
    if to_currency is not None:
        body["to_currency"] = to_currency
    return await client.post(
        "/v1/transfers",
        json=body,
        headers={"Idempotency-Key": key or unique("fx"), **(headers or {})},
    )


def house(db: SyncDatabase, kind: str, currency: str) -> Decimal:
    """The FX account's (or the sum of the fee shards') balance in a currency; 0 if none."""
    with db.transaction() as connection:
        amount = connection.execute(
            text("SELECT coalesce(sum(amount), 0) FROM accounts WHERE kind = :k AND currency = :c"),
            {"k": kind, "c": currency},
        ).scalar_one()
    return Decimal(amount)


def conserved(db: SyncDatabase, *currencies: str) -> None:
    """Per currency, every account (merchants, fees, FX, issuance) sums to zero: merchant
    balances + fee accounts + FX account = money brought in, net (the issuance account's
    negation)."""
    with db.transaction() as connection:
        rows = connection.execute(
            text(
                "SELECT currency, sum(amount) AS total FROM accounts"
                " WHERE currency = ANY(:c) GROUP BY currency"
            ),
            {"c": list(currencies)},
        ).all()
    totals = {row.currency: row.total for row in rows}
    assert {currency: totals.get(currency, 0) for currency in currencies} == dict.fromkeys(
        currencies, 0
    )


def entries_of(db: SyncDatabase, transfer_id: str) -> list[tuple[str, str, Decimal]]:
    """(account kind, currency, amount) of every posting of a transfer, sorted."""
    with db.transaction() as connection:
        rows = connection.execute(
            text(
                "SELECT a.kind, a.currency, e.amount FROM entries e"
                " JOIN accounts a ON a.id = e.account_id WHERE e.transfer_id = :id"
            ),
            {"id": transfer_id},
        ).all()
    return sorted((row.kind, row.currency, Decimal(row.amount)) for row in rows)


async def merchant_key(
    client: httpx.AsyncClient, merchant: str | None, scope: str = "write"
) -> str:
    response = await client.post(
        "/v1/api-keys", json={"name": unique("k"), "merchant": merchant, "scope": scope}
    )
    assert response.status_code == 200, response.text
    secret: str = response.json()["result"]["secret"]
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
async def keyless(client: httpx.AsyncClient, app: FastAPI) -> Any:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        yield http


class TestRates:
    async def test_put_sets_a_rate_and_renders_it_with_12_decimals(
        self, client: httpx.AsyncClient
    ) -> None:
        base, quote = fresh_currency(), fresh_currency()
        response = await put_rate(client, base.lower(), quote, "1.085")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == 200
        first = body["result"]
        assert set(first) == {"base", "quote", "rate", "updated"}
        assert (first["base"], first["quote"], first["rate"]) == (base, quote, "1.085000000000")
        assert first["updated"].endswith("Z")
        # Replacing it: the same pair, the new rate, `updated` moves.
        second = await set_rate(client, base, quote, 0.000000000001)  # a JSON number, exactly
        assert second["rate"] == "0.000000000001"
        assert second["updated"] >= first["updated"]
        listed = (await client.get("/v1/fx-rates")).json()["result"]
        mine = [rate for rate in listed if base in (rate["base"], rate["quote"])]
        # No inverse is implied.
        assert mine == [second]

    async def test_the_listing_is_ordered_by_base_then_quote(
        self, client: httpx.AsyncClient
    ) -> None:
        base = fresh_currency()
        await set_rate(client, base, "ZZZ", "2")
        await set_rate(client, base, "AAA", "3")
        response = await client.get("/v1/fx-rates")
        assert response.status_code == 200
        pairs = [(rate["base"], rate["quote"]) for rate in response.json()["result"]]
        assert pairs == sorted(pairs)
        assert [(base, "AAA"), (base, "ZZZ")] == [pair for pair in pairs if pair[0] == base]

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"rate": "1.0000000000001"}, "Rate must have at most 12 decimal places"),
            ({"rate": 0.1234567890123}, "Rate must have at most 12 decimal places"),
            ({"rate": "0"}, "Rate must be greater than 0"),
            ({"rate": -1}, "Rate must be greater than 0"),
            ({"rate": "1000000000000000"}, "Rate must be less than 1000000000000000"),
            ({"rate": "one"}, "Rate must be a decimal number"),
            ({"rate": True}, "Rate must be a decimal number or a string"),
            ({"rate": None}, "Rate must be a decimal number or a string"),
            ({}, "Field required"),
        ],
    )
    async def test_an_invalid_rate_is_422(
        self, client: httpx.AsyncClient, body: dict[str, Any], message: str
    ) -> None:
        base, quote = fresh_currency(), fresh_currency()
        response = await client.put(f"/v1/fx-rates/{base}/{quote}", json=body)
        assert response.status_code == 422
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.rate", "message": message}],
        }
        listed = (await client.get("/v1/fx-rates")).json()["result"]
        assert all(rate["base"] != base for rate in listed)

    @pytest.mark.parametrize(
        ("path", "field", "message"),
        [
            ("USD/usd", "path.quote", "Base and quote must be different currencies"),
            ("US/EUR", "path.base", "Currency must be 3 to 10 letters or digits"),
            ("USD/EURO-1", "path.quote", "Currency must be 3 to 10 letters or digits"),
            ("ABCDEFGHIJK/EUR", "path.base", "Currency must be 3 to 10 letters or digits"),
        ],
    )
    async def test_a_bad_pair_is_422(
        self, client: httpx.AsyncClient, path: str, field: str, message: str
    ) -> None:
        response = await client.put(f"/v1/fx-rates/{path}", json={"rate": "1"})
        assert response.status_code == 422
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": field, "message": message}],
        }

    async def test_admin_writes_any_key_reads(
        self, client: httpx.AsyncClient, keyless: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(client)
        write = bearer(await merchant_key(client, merchant["name"]))
        read = bearer(await merchant_key(client, merchant["name"], "read"))
        admin_read = bearer(await merchant_key(client, None, "read"))
        base, quote = fresh_currency(), fresh_currency()
        for headers in (write, read, admin_read):
            response = await put_rate(keyless, base, quote, "2", headers=headers)
            assert (response.status_code, response.json()) == (403, FORBIDDEN)
        assert (
            await put_rate(keyless, base, quote, "2", headers=bearer("mlk_" + "x" * 43))
        ).status_code == 401
        for headers in (write, read, admin_read):
            response = await keyless.get("/v1/fx-rates", headers=headers)
            assert response.status_code == 200
            assert all(rate["base"] != base for rate in response.json()["result"])

    @pytest.mark.parametrize("method", ["GET", "PUT"])
    async def test_no_key_is_401(self, keyless: httpx.AsyncClient, method: str) -> None:
        path = "/v1/fx-rates" if method == "GET" else "/v1/fx-rates/USD/EUR"
        response = await keyless.request(method, path, json={"rate": "1"})
        assert response.status_code == 401
        assert response.json() == {"status": 401, "error": "Missing or invalid API key"}
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_the_unversioned_alias_works(self, client: httpx.AsyncClient) -> None:
        base, quote = fresh_currency(), fresh_currency()
        response = await put_rate(client, base, quote, "4.5", prefix="")
        assert response.status_code == 200
        assert (await client.get("/fx-rates")).status_code == 200

    async def test_openapi_documents_the_rates(self, client: httpx.AsyncClient) -> None:
        paths = (await client.get("/openapi.json")).json()["paths"]
        put = paths["/v1/fx-rates/{base}/{quote}"]["put"]
        assert {"200", "401", "403", "422", "429", "503"} <= set(put["responses"])
        assert "/fx-rates" not in paths  # the alias is not documented
        listing = paths["/v1/fx-rates"]["get"]
        assert {"200", "401", "422"} <= set(listing["responses"])
        schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
        assert {"to_currency", "fx_rate", "converted_amount"} <= set(
            schemas["TransferRead"]["properties"]
        )
        assert "to_currency" in schemas["TransferCreate"]["properties"]


class TestCrossCurrencyTransfers:
    async def test_converts_rounding_down_and_posts_five_legs(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "1000", usd, percent_fee="2")
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "0.923456789012")
        response = await convert(
            client, sender["name"], receiver["name"], "100", usd, eur.lower(),
            headers={"Prefer": "wait=10"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["Preference-Applied"] == "wait=10"
        transfer = response.json()["result"]
        assert transfer["state"] == "completed"
        assert (transfer["currency"], transfer["to_currency"]) == (usd, eur)
        assert transfer["fx_rate"] == "0.923456789012"
        # 100 x 0.923456789012 = 92.3456789012: rounded down to 8 decimals.
        assert transfer["converted_amount"] == "92.34567890"
        assert (transfer["amount"], transfer["fee"]) == ("100.00000000", "2.00000000")
        assert await balance_of(client, sender["name"], usd) == Decimal("898")
        # The receiver's balance in to_currency was opened; none in the sender's currency.
        assert await balance_of(client, receiver["name"], eur) == Decimal("92.3456789")
        assert await balance_of(client, receiver["name"], usd) is None
        assert house(sync_db, "fx", usd) == Decimal("100")
        assert house(sync_db, "fx", eur) == Decimal("-92.3456789")
        assert house(sync_db, "fee", usd) == Decimal("2")
        assert entries_of(sync_db, transfer["id"]) == sorted(
            [
                ("merchant", usd, Decimal("-102")),
                ("fee", usd, Decimal("2")),
                ("fx", usd, Decimal("100")),
                ("fx", eur, Decimal("-92.3456789")),
                ("merchant", eur, Decimal("92.3456789")),
            ]
        )
        conserved(sync_db, usd, eur)
        assert (await client.get(f"/v1/transfers/{transfer['id']}")).json()["result"] == transfer
        assert_ledger_consistent(sync_db)

    async def test_the_same_currency_twice_is_an_ordinary_transfer(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd = fresh_currency()
        sender = await funded_merchant(client, "10", usd)
        receiver = await create_merchant(client)
        key = unique("same")
        response = await convert(
            client, sender["name"], receiver["name"], "1", usd, usd.lower(), key
        )
        assert response.status_code == 202
        transfer = response.json()["result"]
        assert (transfer["to_currency"], transfer["fx_rate"], transfer["converted_amount"]) == (
            None,
            None,
            None,
        )
        # The same request without to_currency: the same transfer (the same fingerprint).
        again = await convert(client, sender["name"], receiver["name"], "1", usd, None, key)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["result"]["id"] == transfer["id"]
        (final,) = await settle(client, [transfer["id"]])
        assert final["state"] == "completed"
        assert await balance_of(client, receiver["name"], usd) == Decimal("1")
        assert house(sync_db, "fx", usd) == 0

    async def test_no_rate_is_400_and_records_nothing(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "10", usd)
        receiver = await create_merchant(client)
        await set_rate(client, eur, usd, "1.1")  # the inverse pair: no rate is implied
        key = unique("norate")
        response = await convert(client, sender["name"], receiver["name"], "1", usd, eur, key)
        assert response.status_code == 400
        assert response.json() == {"status": 400, "error": f"No FX rate for {usd} to {eur}"}
        assert (
            count(sync_db, "SELECT count(*) FROM transfers WHERE idempotency_key = :k", k=key) == 0
        )
        # The key stays free: once the rate exists, the same key records the transfer.
        await set_rate(client, usd, eur, "0.9")
        response = await convert(client, sender["name"], receiver["name"], "1", usd, eur, key)
        assert response.status_code == 202
        assert response.json()["result"]["converted_amount"] == "0.90000000"

    async def test_parties_are_checked_before_the_rate(self, client: httpx.AsyncClient) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "10", usd)
        response = await convert(client, sender["name"], "nobody-here", "1", usd, eur)
        assert response.status_code == 404
        assert response.json()["error"] == "From merchant or to merchant does not exist"
        receiver = await create_merchant(client)
        response = await convert(client, sender["name"], receiver["name"], "1", eur, usd)
        assert response.status_code == 404
        assert (
            response.json()["error"] == f"From merchant balance with currency {eur} does not exist"
        )

    async def test_a_converted_amount_of_zero_is_422(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "10", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "0.000000001")
        key = unique("zero")
        # 0.00000999 x 0.000000001 = 0.00000000000000999: rounds down to 0.
        response = await convert(
            client, sender["name"], receiver["name"], "0.00000999", usd, eur, key
        )
        assert response.status_code == 422
        assert response.json() == {
            "status": 422,
            "error": ["Converted amount is zero"],
            "details": [{"field": "body.amount", "message": "Converted amount is zero"}],
        }
        assert (
            count(sync_db, "SELECT count(*) FROM transfers WHERE idempotency_key = :k", k=key) == 0
        )
        # The smallest amount that converts to one unit is accepted.
        response = await convert(client, sender["name"], receiver["name"], "10", usd, eur)
        assert response.json()["result"]["converted_amount"] == "0.00000001"

    async def test_a_converted_amount_of_10_to_the_20_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "99999999999999999999", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "10")
        response = await convert(
            client, sender["name"], receiver["name"], "10000000000000000000", usd, eur
        )
        assert response.status_code == 422
        assert response.json()["error"] == [
            "Converted amount must be less than 100000000000000000000"
        ]

    async def test_an_invalid_to_currency_is_422(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        response = await convert(client, sender["name"], receiver["name"], "1", "USD", "E$R")
        assert response.status_code == 422
        assert response.json()["details"] == [
            {"field": "body.to_currency", "message": "Currency must be 3 to 10 letters or digits"}
        ]

    async def test_the_rate_is_snapshotted_at_submission(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "100", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "2")
        with sync_db.transaction() as connection:
            # Hold the sender's balance: a worker that claims the transfer waits here, so it is
            # still pending when the rate changes.
            connection.execute(
                text(
                    "SELECT 1 FROM accounts a JOIN merchants m ON m.id = a.merchant_id"
                    " WHERE m.name = :name AND a.currency = :c FOR UPDATE OF a"
                ),
                {"name": sender["name"], "c": usd},
            )
            response = await convert(client, sender["name"], receiver["name"], "10", usd, eur)
            assert response.status_code == 202
            pending = response.json()["result"]
            await set_rate(client, usd, eur, "3")
            now = (await client.get(f"/v1/transfers/{pending['id']}")).json()["result"]
            assert now["state"] == "pending"
            assert (now["fx_rate"], now["converted_amount"]) == ("2.000000000000", "20.00000000")
        (final,) = await settle(client, [pending["id"]])
        assert final["state"] == "completed"
        assert (final["fx_rate"], final["converted_amount"]) == ("2.000000000000", "20.00000000")
        assert await balance_of(client, receiver["name"], eur) == Decimal("20")
        # A transfer submitted after the change takes the new rate.
        later = await convert(client, sender["name"], receiver["name"], "10", usd, eur)
        assert later.json()["result"]["converted_amount"] == "30.00000000"
        await settle(client, [later.json()["result"]["id"]])
        conserved(sync_db, usd, eur)

    async def test_insufficient_funds_moves_nothing_in_either_currency(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "100", usd, percent_fee="2")
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "1.5")
        response = await convert(
            client, sender["name"], receiver["name"], "99", usd, eur, headers={"Prefer": "wait=10"}
        )
        transfer = response.json()["result"]
        assert (transfer["state"], transfer["failure_reason"]) == ("failed", "Insufficient funds")
        assert (transfer["fee"], transfer["converted_amount"]) == ("1.98000000", "148.50000000")
        assert await balance_of(client, sender["name"], usd) == Decimal("100")
        assert await balance_of(client, receiver["name"], eur) is None  # not left opened
        assert house(sync_db, "fx", usd) == house(sync_db, "fx", eur) == 0
        assert entries_of(sync_db, transfer["id"]) == []
        conserved(sync_db, usd, eur)
        assert_ledger_consistent(sync_db)

    async def test_an_existing_receiver_balance_is_credited(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "50", usd)
        receiver = await funded_merchant(client, "7", eur)
        await set_rate(client, usd, eur, "0.5")
        responses = [
            await convert(client, sender["name"], receiver["name"], "10", usd, eur)
            for _ in range(3)
        ]
        final = await settle(client, [r.json()["result"]["id"] for r in responses])
        assert {t["state"] for t in final} == {"completed"}
        assert await balance_of(client, receiver["name"], eur) == Decimal("22")
        assert await balance_of(client, sender["name"], usd) == Decimal("20")
        assert house(sync_db, "fx", usd) == Decimal("30")
        assert house(sync_db, "fx", eur) == Decimal("-15")
        conserved(sync_db, usd, eur)

    async def test_idempotency_compares_to_currency(self, client: httpx.AsyncClient) -> None:
        usd, eur, gbp = fresh_currency(), fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "50", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "0.9")
        await set_rate(client, usd, gbp, "0.8")
        key = unique("idem")
        first = await convert(client, sender["name"], receiver["name"], "1", usd, eur, key)
        assert first.status_code == 202
        replay = await convert(
            client, sender["name"], receiver["name"], "1.0", usd.lower(), eur.lower(), key
        )
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["result"]["id"] == first.json()["result"]["id"]
        reused = {
            "status": 422,
            "error": [f"Idempotency-Key {key} was already used for a different request"],
            "details": [
                {
                    "field": "header.Idempotency-Key",
                    "message": f"Idempotency-Key {key} was already used for a different request",
                }
            ],
        }
        for to_currency in (gbp, None, usd):
            response = await convert(
                client, sender["name"], receiver["name"], "1", usd, to_currency, key
            )
            assert (response.status_code, response.json()) == (422, reused)
        # A replay wins over a refusal: with the rate gone to zero, the key still names it.
        await set_rate(client, usd, eur, "0.000000000001")
        replay = await convert(client, sender["name"], receiver["name"], "1", usd, eur, key)
        assert replay.status_code in (200, 202)
        assert replay.json()["result"]["converted_amount"] == "0.90000000"

    async def test_listing_by_currency_matches_either_side(self, client: httpx.AsyncClient) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "50", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "3")
        fx = (await convert(client, sender["name"], receiver["name"], "1", usd, eur)).json()[
            "result"
        ]
        plain = (await convert(client, sender["name"], receiver["name"], "1", usd, None)).json()[
            "result"
        ]
        for currency, expected in ((usd, [plain["id"], fx["id"]]), (eur.lower(), [fx["id"]])):
            response = await client.get("/v1/transfers", params={"currency": currency})
            assert response.status_code == 200
            assert [t["id"] for t in response.json()["result"]] == expected
        response = await client.get(
            "/v1/transfers", params={"currency": eur, "to": receiver["name"]}
        )
        assert [t["id"] for t in response.json()["result"]] == [fx["id"]]

    async def test_a_cross_currency_transfer_cannot_be_reversed(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "50", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "2")
        response = await convert(
            client, sender["name"], receiver["name"], "10", usd, eur, headers={"Prefer": "wait=10"}
        )
        transfer = response.json()["result"]
        assert transfer["state"] == "completed"
        for body in ({}, {"amount": "1"}):
            key = unique("rev")
            refused = await client.post(
                f"/v1/transfers/{transfer['id']}/reversals",
                json=body,
                headers={"Idempotency-Key": key},
            )
            assert (refused.status_code, refused.json()) == (
                400,
                {"status": 400, "error": "Cross-currency transfers cannot be reversed"},
            )
            assert (
                count(sync_db, "SELECT count(*) FROM transfers WHERE idempotency_key = :k", k=key)
                == 0
            )
        assert (await client.get(f"/v1/transfers/{transfer['id']}")).json()["result"][
            "reversed_amount"
        ] == "0.00000000"

    async def test_a_merchant_key_sends_across_currencies(self, client: httpx.AsyncClient) -> None:
        usd, eur = fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "50", usd)
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "2")
        own = bearer(await merchant_key(client, sender["name"]))
        response = await convert(
            client,
            sender["name"],
            receiver["name"],
            "1",
            usd,
            eur,
            headers={**own, "Prefer": "wait=10"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"]["converted_amount"] == "2.00000000"
        # The receiver's key sees it (it is a party), with its conversion.
        theirs = bearer(await merchant_key(client, receiver["name"], "read"))
        seen = await client.get(f"/v1/transfers/{response.json()['result']['id']}", headers=theirs)
        assert seen.json()["result"]["to_currency"] == eur


class TestBatches:
    async def test_items_may_convert_each_judged_alone(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        usd, eur, gbp = fresh_currency(), fresh_currency(), fresh_currency()
        sender = await funded_merchant(client, "1000", usd, percent_fee="1")
        receiver = await create_merchant(client)
        await set_rate(client, usd, eur, "1.25")
        await set_rate(client, usd, gbp, "0.000000001")

        def item(amount: str, to_currency: str | None, key: str | None = None) -> dict[str, Any]:
            body = {
                "idempotency_key": key or unique("bfx"),
                "from_merchant": sender["name"],
                "to_merchant": receiver["name"],
                "amount": amount,
                "currency": usd,
            }
            if to_currency is not None:
                body["to_currency"] = to_currency
            return body

        items = [
            item("10", eur),  # 0 converted
            item("20", usd),  # 1 the same currency: ordinary
            item("1", fresh_currency()),  # 2 no rate
            item("0.00000001", gbp),  # 3 converted to zero
            item("4", eur.lower()),  # 4 converted
            item("1", "e"),  # 5 malformed to_currency
        ]
        response = await client.post("/v1/batches", json={"transfers": items})
        assert response.status_code == 202, response.text
        batch = response.json()["result"]
        assert (batch["accepted"], batch["refused"]) == (3, 3)
        results = batch["items"]
        assert results[0]["transfer"]["converted_amount"] == "12.50000000"
        assert results[0]["transfer"]["fx_rate"] == "1.250000000000"
        assert results[1]["transfer"]["to_currency"] is None
        assert results[2]["error"] == {
            "status": 400,
            "message": f"No FX rate for {usd} to {items[2]['to_currency']}",
        }
        assert results[3]["error"] == {
            "status": 422,
            "message": ["Converted amount is zero"],
            "details": [{"field": "body.amount", "message": "Converted amount is zero"}],
        }
        assert results[4]["transfer"]["to_currency"] == eur
        assert results[5]["error"]["details"] == [
            {"field": "body.to_currency", "message": "Currency must be 3 to 10 letters or digits"}
        ]
        ids = [results[i]["transfer"]["id"] for i in (0, 1, 4)]
        assert {t["state"] for t in await settle(client, ids)} == {"completed"}
        assert await balance_of(client, receiver["name"], eur) == Decimal("17.5")
        assert await balance_of(client, receiver["name"], usd) == Decimal("20")
        assert await balance_of(client, sender["name"], usd) == Decimal("965.66")
        assert house(sync_db, "fx", usd) == Decimal("14")
        conserved(sync_db, usd, eur, gbp)
        # Replayed item by item, with to_currency compared.
        again = await client.post(
            "/v1/batches",
            json={"transfers": [items[0], {**items[4], "to_currency": usd}]},
        )
        replayed = again.json()["result"]["items"]
        assert replayed[0]["transfer"]["id"] == results[0]["transfer"]["id"]
        assert replayed[1]["error"]["status"] == 422
        assert_ledger_consistent(sync_db)
