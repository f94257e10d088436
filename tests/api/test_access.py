"""Who may do what: every endpoint x every kind of caller, with the exact status and message.

Callers: no key, a revoked key, an admin key, the merchant's own write key, its own read key,
and another merchant's write key. Resources belong to `own` (the merchant under test); `other`
is a merchant that must learn nothing about them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import ADMIN_HEADERS
from tests.helpers import create_merchant, funded_merchant, settle, submit, unique

FORBIDDEN = (403, "Forbidden")
UNAUTHENTICATED = (401, "Missing or invalid API key")
CALLERS = ["none", "revoked", "admin", "own_write", "own_read", "other"]


@dataclass
class World:
    own: dict[str, Any]
    other: dict[str, Any]
    third: dict[str, Any]
    headers: dict[str, dict[str, str]]
    own_transfer: str  # own -> other
    unrelated_transfer: str  # third -> other: own is no party
    admin_batch: str
    own_batch: str
    key_to_revoke: str


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def new_key(client: httpx.AsyncClient, merchant: str | None, scope: str = "write") -> Any:
    response = await client.post(
        "/v1/api-keys", json={"name": unique("key"), "merchant": merchant, "scope": scope}
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]


@pytest.fixture(scope="module")
async def world(client: httpx.AsyncClient) -> World:
    own = await funded_merchant(client, "1000")
    other = await funded_merchant(client, "1000")
    third = await funded_merchant(client, "1000")
    revoked = await new_key(client, own["name"])
    response = await client.delete(f"/v1/api-keys/{revoked['id']}")
    assert response.status_code == 200 and response.json()["result"]["revoked"] is not None
    own_write = (await new_key(client, own["name"]))["secret"]
    headers = {
        "none": {},
        "revoked": bearer(revoked["secret"]),
        "admin": ADMIN_HEADERS,
        "own_write": bearer(own_write),
        "own_read": bearer((await new_key(client, own["name"], "read"))["secret"]),
        "other": bearer((await new_key(client, other["name"]))["secret"]),
    }
    own_transfer = (await submit(client, own["name"], other["name"], "1")).json()["result"]["id"]
    unrelated = (await submit(client, third["name"], other["name"], "1")).json()["result"]["id"]
    await settle(client, [own_transfer, unrelated])
    batches = []
    for caller in ("admin", "own_write"):
        item = {
            "idempotency_key": unique("b"),
            "from_merchant": own["name"],
            "to_merchant": other["name"],
            "amount": "1",
            "currency": "USD",
        }
        answer = await client.post(
            "/v1/batches", json={"transfers": [item]}, headers=headers[caller]
        )
        assert answer.status_code == 202, answer.text
        batches.append(answer.json()["result"]["id"])
    await asyncio.sleep(1)  # the revoked key's cache entry (if any) has expired
    target = await new_key(client, None)
    return World(
        own, other, third, headers, own_transfer, unrelated, *batches, key_to_revoke=target["id"]
    )


@pytest.fixture(scope="module")
async def keyless(client: httpx.AsyncClient, app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the same app that sends only the headers each request names."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        yield http


def transfer_body(sender: str, receiver: str) -> dict[str, str]:
    return {"from_merchant": sender, "to_merchant": receiver, "amount": "1", "currency": "USD"}


# Each endpoint: how to call it, then the expected (status, message or None) per caller.
# `None` as a message: only the status is checked (a success, whose body other tests cover).
def endpoints(w: World) -> list[tuple[str, str, str, dict[str, Any] | None, dict[str, Any]]]:
    own, other = w.own["name"], w.other["name"]
    not_own = (404, f"Merchant {own} does not exist")
    return [
        (
            "create merchant",
            "POST",
            "/v1/merchants",
            {"name": unique(), "percent_fee": "1"},
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
        (
            "open balance",
            "POST",
            "/v1/merchants/balance",
            {
                "merchant_id": w.own["id"],
                "currency": unique("C")[-6:].upper(),
                "initial_amount": "1",
            },
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
        (
            "change merchant",
            "PATCH",
            f"/v1/merchants/{own}",
            {"percent_fee": "0"},
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
        (
            "get merchant",
            "GET",
            f"/v1/merchants/{own}",
            None,
            {
                "admin": (200, None),
                "own_write": (200, None),
                "own_read": (200, None),
                "other": not_own,
            },
        ),
        (
            "list balances",
            "GET",
            f"/v1/merchants/{own}/balance",
            None,
            {
                "admin": (200, None),
                "own_write": (200, None),
                "own_read": (200, None),
                "other": not_own,
            },
        ),
        (
            "submit transfer",
            "POST",
            "/v1/transfers",
            transfer_body(own, other),
            {
                "admin": (202, None),
                "own_write": (202, None),
                "own_read": FORBIDDEN,
                "other": (403, f"API key may not act for merchant {own}"),
            },
        ),
        (
            "get own transfer",
            "GET",
            f"/v1/transfers/{w.own_transfer}",
            None,
            {
                "admin": (200, None),
                "own_write": (200, None),
                "own_read": (200, None),
                "other": (200, None),
            },  # other received it: a party sees it
        ),
        (
            "get unrelated transfer",
            "GET",
            f"/v1/transfers/{w.unrelated_transfer}",
            None,
            {
                "admin": (200, None),
                "own_write": (404, f"Transfer {w.unrelated_transfer} does not exist"),
                "own_read": (404, f"Transfer {w.unrelated_transfer} does not exist"),
                "other": (200, None),
            },
        ),
        (
            "list transfers",
            "GET",
            "/v1/transfers",
            None,
            {
                "admin": (200, None),
                "own_write": (200, None),
                "own_read": (200, None),
                "other": (200, None),
            },
        ),
        (
            "submit batch",
            "POST",
            "/v1/batches",
            {"transfers": [{"idempotency_key": unique("i"), **transfer_body(own, other)}]},
            {
                "admin": (202, None),
                "own_write": (202, None),
                "own_read": FORBIDDEN,
                "other": (202, None),
            },  # accepted as a batch; the item is refused (below)
        ),
        (
            "get admin's batch",
            "GET",
            f"/v1/batches/{w.admin_batch}",
            None,
            {
                "admin": (200, None),
                "own_write": (404, f"Batch {w.admin_batch} does not exist"),
                "own_read": (404, f"Batch {w.admin_batch} does not exist"),
                "other": (404, f"Batch {w.admin_batch} does not exist"),
            },
        ),
        (
            "get own batch",
            "GET",
            f"/v1/batches/{w.own_batch}",
            None,
            {
                "admin": (200, None),
                "own_write": (200, None),
                "own_read": (200, None),
                "other": (404, f"Batch {w.own_batch} does not exist"),
            },
        ),
        (
            "queue status",
            "GET",
            "/v1/ops/queue",
            None,
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
        (
            "create key",
            "POST",
            "/v1/api-keys",
            {"name": unique("k"), "merchant": own},
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
        (
            "list keys",
            "GET",
            "/v1/api-keys",
            None,
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
        (
            "revoke key",
            "DELETE",
            f"/v1/api-keys/{w.key_to_revoke}",
            None,
            {
                "admin": (200, None),
                "own_write": FORBIDDEN,
                "own_read": FORBIDDEN,
                "other": FORBIDDEN,
            },
        ),
    ]


ENDPOINT_NAMES = [
    "create merchant", "open balance", "change merchant", "get merchant", "list balances",
    "submit transfer",
    "get own transfer", "get unrelated transfer", "list transfers", "submit batch",
    "get admin's batch", "get own batch", "queue status", "create key", "list keys", "revoke key",
]  # fmt: skip


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINT_NAMES)
async def test_every_endpoint_for_every_caller(
    keyless: httpx.AsyncClient, world: World, endpoint: str, caller: str
) -> None:
    name, method, path, body, expected = next(e for e in endpoints(world) if e[0] == endpoint)
    status, message = UNAUTHENTICATED if caller in ("none", "revoked") else expected[caller]
    headers = {**world.headers[caller], "Idempotency-Key": unique("key")}
    response = await keyless.request(method, path, json=body, headers=headers)
    assert response.status_code == status, (name, caller, response.text)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if message is not None:
        error = response.json()["error"]
        assert error == message, (name, caller, error)


class TestListsAreScoped:
    async def test_a_merchant_lists_only_its_own_transfers(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        response = await client.get(
            "/v1/transfers", params={"limit": 1000}, headers=world.headers["own_read"]
        )
        ids = {t["id"] for t in response.json()["result"]}
        assert world.own_transfer in ids and world.unrelated_transfer not in ids
        own = world.own["id"]
        assert all(
            own in (t["from_merchant_id"], t["to_merchant_id"]) for t in response.json()["result"]
        )

    async def test_a_batch_item_for_another_sender_is_refused_alone(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        items = [
            {
                "idempotency_key": unique("i"),
                **transfer_body(world.other["name"], world.own["name"]),
            },
            {
                "idempotency_key": unique("i"),
                **transfer_body(world.own["name"], world.other["name"]),
            },
        ]
        response = await client.post(
            "/v1/batches", json={"transfers": items}, headers=world.headers["other"]
        )
        result = response.json()["result"]
        assert (result["accepted"], result["refused"]) == (1, 1)
        assert result["items"][1]["error"] == {
            "status": 403,
            "message": f"API key may not act for merchant {world.own['name']}",
        }


class TestKeyCheckComesFirst:
    @pytest.mark.parametrize(
        ("method", "path", "content"),
        [
            ("GET", "/v1/nowhere", None),  # would be 404
            ("POST", "/v1/merchants", b'{"name": '),  # would be 422
            ("POST", "/v1/merchants", b"x" * (65 * 1024)),  # would be 413
            ("GET", "/transfers/not-a-uuid", None),  # an alias, would be 422
        ],
    )
    async def test_401_wins(
        self, keyless: httpx.AsyncClient, method: str, path: str, content: bytes | None
    ) -> None:
        response = await keyless.request(method, path, content=content)
        assert (response.status_code, response.json()) == (
            401,
            {"status": 401, "error": "Missing or invalid API key"},
        )

    @pytest.mark.parametrize(
        "authorization", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "mlk_abc", "Bearer mlk_x"]
    )
    async def test_malformed_authorization_is_401(
        self, keyless: httpx.AsyncClient, authorization: str
    ) -> None:
        response = await keyless.get("/v1/transfers", headers={"Authorization": authorization})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/docs", "/openapi.json"])
    async def test_open_paths_need_no_key(self, keyless: httpx.AsyncClient, path: str) -> None:
        assert (await keyless.get(path)).status_code == 200


class TestIdempotencyScopes:
    async def test_the_same_key_in_two_scopes_names_two_transfers(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        key = unique("shared")
        body = transfer_body(world.own["name"], world.other["name"])
        as_admin = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": key})
        as_own = await client.post(
            "/v1/transfers",
            json=body,
            headers={**world.headers["own_write"], "Idempotency-Key": key},
        )
        assert as_admin.status_code == as_own.status_code == 202
        assert as_admin.json()["result"]["id"] != as_own.json()["result"]["id"]
        assert "idempotent-replayed" not in as_own.headers

    async def test_keys_of_one_merchant_share_a_scope(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        second = bearer((await new_key(client, world.own["name"]))["secret"])
        key = unique("same")
        body = transfer_body(world.own["name"], world.other["name"])
        first = await client.post(
            "/v1/transfers",
            json=body,
            headers={**world.headers["own_write"], "Idempotency-Key": key},
        )
        again = await client.post(
            "/v1/transfers", json=body, headers={**second, "Idempotency-Key": key}
        )
        assert again.json()["result"]["id"] == first.json()["result"]["id"]
        assert again.headers["idempotent-replayed"] == "true"


class TestVersioning:
    async def test_location_names_the_family_of_the_request(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        body = transfer_body(world.own["name"], world.other["name"])
        for prefix in ("/v1", ""):
            response = await client.post(
                f"{prefix}/transfers", json=body, headers={"Idempotency-Key": unique()}
            )
            transfer_id = response.json()["result"]["id"]
            assert response.headers["location"] == f"{prefix}/transfers/{transfer_id}"

    async def test_openapi_documents_v1_with_its_errors(self, client: httpx.AsyncClient) -> None:
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert "/v1/transfers" in paths and "/transfers" not in paths
        for path, operations in paths.items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    assert {"401", "429"} <= set(operation["responses"]), path


class TestKeyManagement:
    async def test_a_key_for_an_unknown_merchant_is_404(self, client: httpx.AsyncClient) -> None:
        name = unique("ghost")
        response = await client.post("/v1/api-keys", json={"name": "x", "merchant": name})
        assert (response.status_code, response.json()["error"]) == (
            404,
            f"Merchant {name} does not exist",
        )

    async def test_revoking_an_unknown_key_is_404(self, client: httpx.AsyncClient) -> None:
        key_id = uuid.uuid4()
        response = await client.delete(f"/v1/api-keys/{key_id}")
        assert (response.status_code, response.json()["error"]) == (
            404,
            f"API key {key_id} does not exist",
        )

    async def test_listing_never_shows_a_secret(self, client: httpx.AsyncClient) -> None:
        await new_key(client, None)
        keys = (await client.get("/v1/api-keys")).json()["result"]
        assert keys and all("secret" not in key for key in keys)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (
                {"name": "x", "rate_limit": "10/hour"},
                'Rate limit must be "<n>/second" or "<n>/minute"',
            ),
            ({"name": "", "merchant": None}, "Key name must be 1 to 64 printable characters"),
            ({"name": "x", "scope": "admin"}, "Input should be 'write' or 'read'"),
        ],
    )
    async def test_invalid_key_requests_are_422(
        self, client: httpx.AsyncClient, body: dict[str, Any], message: str
    ) -> None:
        response = await client.post("/v1/api-keys", json=body)
        assert (response.status_code, response.json()["error"]) == (422, [message])

    async def test_a_merchant_read_key_cannot_write(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        receiver = await create_merchant(client)
        response = await submit(
            client, world.own["name"], receiver["name"], "1", headers=world.headers["own_read"]
        )
        assert (response.status_code, response.json()["error"]) == FORBIDDEN
