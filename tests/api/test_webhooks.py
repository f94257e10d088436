"""Webhooks (SPEC Part 3), against real receivers on 127.0.0.1, the session's real workers and
PostgreSQL: endpoints and their scope, the outbox (one event per final state, every kind, every
path), signed delivery verified with the Standard Webhooks library, retries, giving up, and a
manual retry. The session's schedule is short (`tests/conftest.py`: 200ms,500ms,1s,2s,3s)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from shared.db.ledger import LedgerRepository
from shared.infra.database import SyncDatabase
from shared.services.posting import apply_group
from tests.helpers import (
    assert_ledger_consistent,
    count,
    funded_merchant,
    record_pending,
    settle,
    submit,
    unique,
)
from tests.webhook_receiver import Receiver, always

PRIVATE = "Webhook URL must not point to a private address"
NOT_HTTP = "Webhook URL must be an http or https URL"

NewEndpoint = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def new_key(client: httpx.AsyncClient, merchant: str | None, scope: str = "write") -> str:
    response = await client.post(
        "/v1/api-keys", json={"name": unique("key"), "merchant": merchant, "scope": scope}
    )
    assert response.status_code == 200, response.text
    secret: str = response.json()["result"]["secret"]
    return secret


@pytest.fixture
async def new_endpoint(client: httpx.AsyncClient) -> AsyncIterator[NewEndpoint]:
    """Create endpoints (admin by default); every one still live is deleted after the test, so
    no later test's transfers are sent to a receiver that is gone."""
    created: list[str] = []

    async def create(url: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
        response = await client.post(
            "/v1/webhook-endpoints", json={"url": url, **body}, headers=headers or {}
        )
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        created.append(result["id"])
        return result

    yield create
    for endpoint_id in created:
        await client.delete(f"/v1/webhook-endpoints/{endpoint_id}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


async def attempts(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["result"]
    return result


async def wait_for_attempts(
    client: httpx.AsyncClient, endpoint_id: str, condition: Callable[[list[Any]], bool]
) -> list[dict[str, Any]]:
    for _ in range(600):
        log = await attempts(client, endpoint_id)
        if condition(log):
            return log
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries log: {log}")


async def paid(client: httpx.AsyncClient, amount: str = "1") -> tuple[dict[str, Any], ...]:
    """A completed transfer between two new merchants: (sender, receiver, transfer)."""
    sender = await funded_merchant(client, "100")
    receiver = await funded_merchant(client, "0")
    response = await submit(client, sender["name"], receiver["name"], amount)
    assert response.status_code == 202, response.text
    (transfer,) = await settle(client, [response.json()["result"]["id"]])
    return sender, receiver, transfer


class TestEndpoints:
    async def test_the_secret_is_shown_once(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint, receiver: Receiver
    ) -> None:
        created = await new_endpoint(receiver.url, description="shop")
        assert created["secret"].startswith("whsec_")
        assert len(Webhook(created["secret"])._whsecret) == 32  # type: ignore[attr-defined]
        assert created["events"] == ["transfer.completed", "transfer.failed"]
        assert created["merchant"] is None and created["description"] == "shop"
        listed = (await client.get("/v1/webhook-endpoints")).json()["result"]
        mine = next(e for e in listed if e["id"] == created["id"])
        assert "secret" not in mine and mine["url"] == receiver.url
        # The unversioned alias answers the same.
        alias = (await client.get("/webhook-endpoints")).json()["result"]
        assert any(e["id"] == created["id"] for e in alias)

    @pytest.mark.parametrize(
        ("body", "field", "message"),
        [
            ({"url": "ftp://example.com/x"}, "body.url", NOT_HTTP),
            ({"url": "http:///nohost"}, "body.url", NOT_HTTP),
            ({"url": "http://u:p@example.com/"}, "body.url",
             "Webhook URL must not carry credentials"),
            ({"url": "https://example.com", "events": []}, "body.events",
             "Events must be a non-empty list of transfer.completed, transfer.failed"),
            ({"url": "https://example.com", "events": ["transfer.created"]}, "body.events",
             "Unknown event type: transfer.created"),
            ({}, "body.url", "Field required"),
        ],
    )  # fmt: skip
    async def test_malformed_requests_name_their_field(
        self, api_client: httpx.AsyncClient, body: dict[str, Any], field: str, message: str
    ) -> None:
        response = await api_client.post("/v1/webhook-endpoints", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["details"] == [{"field": field, "message": message}]

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:9/hooks",
            "http://localhost/hooks",  # a name: resolved, and it is loopback
            "http://10.1.2.3/hooks",
            "https://192.168.0.10/hooks",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/hooks",
            "http://[::1]/hooks",
            "http://[::ffff:127.0.0.1]/hooks",
            "http://0.0.0.0/hooks",
        ],
    )
    async def test_private_addresses_are_refused(
        self, api_client: httpx.AsyncClient, app: FastAPI, url: str
    ) -> None:
        settings = app.state.settings
        app.state.settings = dataclasses.replace(settings, webhook_allow_private=False)
        try:
            response = await api_client.post("/v1/webhook-endpoints", json={"url": url})
        finally:
            app.state.settings = settings
        assert response.status_code == 422, response.text
        assert response.json() == {
            "status": 422,
            "error": [PRIVATE],
            "details": [{"field": "body.url", "message": PRIVATE}],
        }

    @pytest.mark.parametrize(
        # The last two make the resolver raise (an empty label, a label over 63 characters).
        "url",
        ["https://nowhere.invalid/hooks", "http://a..b/", f"http://{'a' * 64}.example/"],
    )
    async def test_a_host_that_does_not_resolve_is_refused(
        self, api_client: httpx.AsyncClient, app: FastAPI, url: str
    ) -> None:
        settings = app.state.settings
        app.state.settings = dataclasses.replace(settings, webhook_allow_private=False)
        try:
            response = await api_client.post("/v1/webhook-endpoints", json={"url": url})
        finally:
            app.state.settings = settings
        assert response.status_code == 422, response.text
        message = "Webhook URL's host does not resolve"
        assert response.json()["details"] == [{"field": "body.url", "message": message}]

    async def test_a_public_address_is_accepted(
        self, api_client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        settings = app.state.settings
        app.state.settings = dataclasses.replace(settings, webhook_allow_private=False)
        try:
            response = await api_client.post(
                "/v1/webhook-endpoints", json={"url": "https://93.184.215.14/hooks"}
            )
        finally:
            app.state.settings = settings
        assert response.status_code == 200, response.text
        endpoint_id = response.json()["result"]["id"]
        assert (await api_client.delete(f"/v1/webhook-endpoints/{endpoint_id}")).status_code == 200

    async def test_scoped_by_the_keys_owner(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint, receiver: Receiver
    ) -> None:
        own = await funded_merchant(client, "10")
        other = await funded_merchant(client, "10")
        own_write = bearer(await new_key(client, own["name"]))
        own_read = bearer(await new_key(client, own["name"], "read"))
        other_write = bearer(await new_key(client, other["name"]))
        mine = await new_endpoint(receiver.url, headers=own_write)
        assert mine["merchant"] == own["name"]
        platform = await new_endpoint(receiver.url)

        def ids(response: httpx.Response) -> set[str]:
            assert response.status_code == 200, response.text
            return {endpoint["id"] for endpoint in response.json()["result"]}

        path = "/v1/webhook-endpoints"
        assert ids(await client.get(path, headers=own_read)) == {mine["id"]}
        assert ids(await client.get(path, headers=own_write)) == {mine["id"]}
        assert ids(await client.get(path, headers=other_write)) == set()
        assert {mine["id"], platform["id"]} <= ids(await client.get(path))
        # A read key lists but never writes; another merchant's endpoint does not exist for it.
        refused = await client.post(path, json={"url": receiver.url}, headers=own_read)
        assert refused.status_code == 403 and refused.json()["error"] == "Forbidden"
        for headers in (other_write, own_write):
            response = await client.delete(f"{path}/{platform['id']}", headers=headers)
            assert response.status_code == 404
            assert response.json()["error"] == f"Webhook endpoint {platform['id']} does not exist"
        response = await client.get(f"{path}/{mine['id']}/deliveries", headers=other_write)
        assert response.status_code == 404
        response = await client.delete(f"{path}/{mine['id']}", headers=own_write)
        assert response.status_code == 200 and response.json()["result"]["deleted"] is not None
        assert ids(await client.get(path, headers=own_write)) == set()
        assert (await client.delete(f"{path}/{mine['id']}")).status_code == 404


class TestDelivery:
    async def test_delivered_signed_with_the_transfer_as_the_api_renders_it(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint, receiver: Receiver
    ) -> None:
        endpoint = await new_endpoint(receiver.url)
        _, _, transfer = await paid(client)
        await receiver.wait_until(lambda r: bool(r.for_transfer(transfer["id"])))
        (delivery,) = receiver.for_transfer(transfer["id"])
        # The Standard Webhooks reference library verifies it with the secret.
        event = Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
        assert event["type"] == "transfer.completed"
        assert event["id"] == delivery.id and event["id"].startswith("evt_")
        assert event["created"] == transfer["processed"]
        assert (
            event["data"] == (await client.get(f"/v1/transfers/{transfer['id']}")).json()["result"]
        )
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["webhook-signature"].startswith("v1,")
        log = await wait_for_attempts(client, endpoint["id"], lambda log: bool(log))
        mine = [a for a in log if a["event_id"] == delivery.id]
        assert mine == [
            {
                "event_id": delivery.id,
                "type": "transfer.completed",
                "status_code": 200,
                "error": None,
                "attempted": mine[0]["attempted"],
                "next_attempt": None,
                "delivered": True,
            }
        ]

    async def test_a_receiver_failing_twice_gets_the_same_event_again(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint
    ) -> None:
        receiver = Receiver(lambda _received, count: 500 if count <= 2 else 204)
        try:
            endpoint = await new_endpoint(receiver.url)
            _, _, transfer = await paid(client)
            await receiver.wait_until(lambda r: len(r.for_transfer(transfer["id"])) >= 3)
            first, second, third = receiver.for_transfer(transfer["id"])
            assert first.id == second.id == third.id
            assert first.body == second.body == third.body
            for delivery in (first, second, third):
                Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
            log = await wait_for_attempts(
                client, endpoint["id"], lambda log: any(a["delivered"] for a in log)
            )
            mine = sorted(
                (a for a in log if a["event_id"] == first.id), key=lambda a: a["attempted"]
            )
            assert [(a["status_code"], a["delivered"]) for a in mine] == [
                (500, False),
                (500, False),
                (204, True),
            ]
            assert mine[0]["next_attempt"] is not None and mine[2]["next_attempt"] is None
            await asyncio.sleep(1.5)
            assert len(receiver.for_transfer(transfer["id"])) == 3  # nothing after the 2xx
        finally:
            receiver.stop()

    async def test_given_up_after_the_schedule_then_retried_by_hand(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint
    ) -> None:
        failing = True
        receiver = Receiver(lambda _received, _count: 503 if failing else 200)
        try:
            endpoint = await new_endpoint(receiver.url, events=["transfer.completed"])
            _, _, transfer = await paid(client)
            # Six attempts: the first, then one after each of the schedule's five delays.
            log = await wait_for_attempts(
                client,
                endpoint["id"],
                lambda log: any(a["next_attempt"] is None for a in log),
            )
            assert [a["status_code"] for a in log] == [503] * 6
            assert [a["next_attempt"] is None for a in log] == [True] + [False] * 5
            event_id = log[0]["event_id"]
            await asyncio.sleep(1.0)
            assert len(receiver.of(event_id)) == 6
            path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{event_id}/retry"
            failing = False
            response = await client.post(path)
            assert response.status_code == 202, response.text
            delivery = response.json()["result"]
            assert delivery["event_id"] == event_id and delivery["state"] == "pending"
            assert delivery["attempts"] == 6 and delivery["delivered"] is None
            await receiver.wait_until(lambda r: len(r.of(event_id)) == 7)
            assert {r.body for r in receiver.of(event_id)} == {receiver.of(event_id)[0].body}
            log = await wait_for_attempts(
                client, endpoint["id"], lambda log: log[0]["delivered"] is True
            )
            assert len(log) == 7
            assert receiver.for_transfer(transfer["id"])[0].event["type"] == "transfer.completed"
        finally:
            receiver.stop()

    async def test_a_manual_retry_of_a_delivered_event_sends_it_again(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint, receiver: Receiver
    ) -> None:
        endpoint = await new_endpoint(receiver.url)
        _, _, transfer = await paid(client)
        await receiver.wait_until(lambda r: bool(r.for_transfer(transfer["id"])))
        (first,) = receiver.for_transfer(transfer["id"])
        await wait_for_attempts(client, endpoint["id"], lambda log: bool(log))
        base = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
        response = await client.post(f"{base}/{first.id}/retry")
        assert response.status_code == 202, response.text
        await receiver.wait_until(lambda r: len(r.for_transfer(transfer["id"])) == 2)
        second = receiver.for_transfer(transfer["id"])[1]
        assert (second.id, second.body) == (first.id, first.body)
        unknown = "evt_" + uuid.uuid4().hex
        response = await client.post(f"{base}/{unknown}/retry")
        assert response.status_code == 404, response.text
        assert response.json()["error"] == f"Delivery of event {unknown} does not exist"
        response = await client.post(f"{base}/not-an-event/retry")
        assert response.status_code == 422, response.text
        assert response.json()["details"] == [
            {
                "field": "path.event_id",
                "message": "Event id must be evt_ followed by 32 hexadecimal digits",
            }
        ]

    async def test_a_merchant_endpoint_gets_only_its_merchants_events(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint, receiver: Receiver
    ) -> None:
        own = await funded_merchant(client, "100")
        other = await funded_merchant(client, "100")
        third = await funded_merchant(client, "100")
        await new_endpoint(receiver.url, headers=bearer(await new_key(client, own["name"])))
        platform = Receiver()
        try:
            await new_endpoint(platform.url)
            sent = await submit(client, own["name"], other["name"], "1")
            got = await submit(client, other["name"], own["name"], "1")
            unrelated = await submit(client, other["name"], third["name"], "1")
            failed = await submit(client, third["name"], other["name"], "1000")
            ids = [r.json()["result"]["id"] for r in (sent, got, unrelated, failed)]
            await settle(client, ids)
            await platform.wait_until(lambda r: all(r.for_transfer(i) for i in ids))
            await receiver.wait_until(lambda r: all(r.for_transfer(i) for i in ids[:2]))
            await asyncio.sleep(1.0)  # anything else would have come by now
            seen = {r.event["data"]["id"] for r in receiver.received}
            assert seen == set(ids[:2])
            for delivered in receiver.received:
                data = delivered.event["data"]
                assert own["id"] in (data["from_merchant_id"], data["to_merchant_id"])
            types = {r.event["data"]["id"]: r.event["type"] for r in platform.received}
            assert types[ids[3]] == "transfer.failed" and types[ids[0]] == "transfer.completed"
        finally:
            platform.stop()

    async def test_a_deleted_endpoint_receives_nothing_more(
        self, client: httpx.AsyncClient, new_endpoint: NewEndpoint, receiver: Receiver
    ) -> None:
        endpoint = await new_endpoint(receiver.url)
        response = await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
        assert response.status_code == 200
        _, _, transfer = await paid(client)
        await asyncio.sleep(2.0)
        assert receiver.for_transfer(transfer["id"]) == []

    async def test_a_delivery_fanned_out_while_its_endpoint_was_deleted_is_cancelled(
        self,
        client: httpx.AsyncClient,
        new_endpoint: NewEndpoint,
        receiver: Receiver,
        sync_db: SyncDatabase,
    ) -> None:
        """The fan-out read the endpoint as live, the deletion committed before the fan-out's
        deliveries did: such a delivery is cancelled when it comes due, never sent."""
        endpoint = await new_endpoint(receiver.url)
        _, _, transfer = await paid(client)
        await wait_for_attempts(client, endpoint["id"], lambda log: len(log) >= 1)
        receiver.received.clear()
        with sync_db.transaction() as connection:
            connection.execute(
                text("UPDATE webhook_endpoints SET deleted = clock_timestamp() WHERE id = :id"),
                {"id": endpoint["id"]},
            )
            connection.execute(
                text(
                    "UPDATE webhook_deliveries SET state = 'pending', attempts = 0,"
                    " next_attempt = clock_timestamp(), delivered = NULL WHERE endpoint_id = :id"
                ),
                {"id": endpoint["id"]},
            )
        for _ in range(100):
            with sync_db.transaction() as connection:
                state = connection.execute(
                    text("SELECT state FROM webhook_deliveries WHERE endpoint_id = :id"),
                    {"id": endpoint["id"]},
                ).scalar_one()
            if state != "pending":
                break
            await asyncio.sleep(0.1)
        assert state == "cancelled"
        assert receiver.for_transfer(transfer["id"]) == []


class TestOutbox:
    async def test_one_event_per_final_state_of_every_kind_on_every_path(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        new_endpoint: NewEndpoint,
        receiver: Receiver,
    ) -> None:
        await new_endpoint(receiver.url)
        alice = await funded_merchant(client, "1000")
        bob = await funded_merchant(client, "5")
        name_a, name_b = alice["name"], bob["name"]
        # Single transfers: completed and failed.
        done = (await submit(client, name_a, name_b, "10")).json()["result"]["id"]
        short = (await submit(client, name_b, name_a, "500")).json()["result"]["id"]
        # Deposit, withdrawals (one completes, one fails), a reversal of `done`.
        key = {"Idempotency-Key": unique("k")}
        deposit = await client.post(
            "/v1/deposits",
            json={"merchant": name_b, "amount": "3", "currency": "USD"},
            headers=key,
        )
        moves = [deposit]
        for amount in ("1", "100000"):
            moves.append(
                await client.post(
                    "/v1/withdrawals",
                    json={"merchant": name_a, "amount": amount, "currency": "USD"},
                    headers={"Idempotency-Key": unique("k")},
                )
            )
        singles = [done, short] + [m.json()["result"]["id"] for m in moves]
        await settle(client, singles)
        reversal = await client.post(
            f"/v1/transfers/{done}/reversals",
            json={"amount": "4"},
            headers={"Idempotency-Key": unique("k")},
        )
        assert reversal.status_code == 202, reversal.text
        singles.append(reversal.json()["result"]["id"])
        # A bulk group (a batch).
        items = [
            {
                "idempotency_key": unique("b"),
                "from_merchant": name_a,
                "to_merchant": name_b,
                "amount": str(amount),
                "currency": "USD",
            }
            for amount in (1, 2, 100000)
        ]
        batch = await client.post("/v1/batches", json={"transfers": items})
        assert batch.status_code == 202, batch.text
        bulk = [item["transfer"]["id"] for item in batch.json()["result"]["items"]]
        # A group applied directly, the sweep's (recorded, never enqueued) and the give-up of
        # transfers whose applying kept failing.
        database = app.state.database
        grouped = await record_pending(database, [(name_a, name_b, Decimal(1))] * 3)
        assert len(apply_group(sync_db, [t.id for t in grouped]).settled) == 3
        swept = await record_pending(database, [(name_a, name_b, Decimal(1))] * 2)
        given_up = await record_pending(database, [(name_a, name_b, Decimal(1))] * 2)
        with sync_db.transaction() as connection:
            _, failed = LedgerRepository(connection).record_apply_failures(
                [t.id for t in given_up], reason="Internal error", max_failures=1, backoff_s=1
            )
        assert len(failed) == 2
        everything = (
            singles
            + bulk
            + [str(t.id) for t in grouped]
            + [str(t.id) for t in swept]
            + [str(t.id) for t in given_up]
        )
        final = {t["id"]: t for t in await settle(client, everything)}
        assert {t["kind"] for t in final.values()} == {
            "transfer",
            "deposit",
            "withdrawal",
            "reversal",
        }
        assert {t["state"] for t in final.values()} == {"completed", "failed"}
        # Exactly one event per final state, of its type; the reversed original has only its own.
        for transfer_id, transfer in final.items():
            rows = count(
                sync_db,
                "SELECT count(*) FROM webhook_events WHERE transfer_id = :id AND type = :type",
                id=transfer_id,
                type=f"transfer.{transfer['state']}",
            )
            assert rows == 1, transfer
        assert count(
            sync_db,
            "SELECT count(*) FROM webhook_events WHERE transfer_id = ANY(CAST(:ids AS uuid[]))",
            ids=everything,
        ) == len(everything)
        # Each reached the receiver once, with its final state.
        await receiver.wait_until(lambda r: all(r.for_transfer(i) for i in everything))
        await asyncio.sleep(1.0)
        for transfer_id, transfer in final.items():
            (delivered,) = receiver.for_transfer(transfer_id)
            assert delivered.event["type"] == f"transfer.{transfer['state']}"
            assert delivered.event["data"]["state"] == transfer["state"]
        # The reversed original's event shows it as it was when it completed.
        (original,) = receiver.for_transfer(done)
        assert original.event["data"]["reversed_amount"] == "0.00000000"
        assert_ledger_consistent(sync_db)

    async def test_no_event_while_no_endpoint_exists(
        self, app: FastAPI, sync_db: SyncDatabase, client: httpx.AsyncClient
    ) -> None:
        """Nobody could receive it: the posting writes no event and the fan-out has none."""
        with sync_db.transaction() as connection:  # any endpoint an earlier test left behind
            connection.execute(
                text("UPDATE webhook_endpoints SET deleted = now() WHERE deleted IS NULL")
            )
        _, _, transfer = await paid(client)
        assert count(sync_db, "SELECT count(*) FROM webhook_events WHERE transfer_id = :id",
                     id=transfer["id"]) == 0  # fmt: skip

    async def test_an_update_that_finalises_nothing_writes_no_event(
        self,
        app: FastAPI,
        sync_db: SyncDatabase,
        client: httpx.AsyncClient,
        new_endpoint: NewEndpoint,
        receiver: Receiver,
    ) -> None:
        await new_endpoint(receiver.url)
        alice = await funded_merchant(client, "10")
        bob = await funded_merchant(client, "0")
        (pending,) = await record_pending(
            app.state.database, [(alice["name"], bob["name"], Decimal(1))]
        )
        with sync_db.transaction() as connection:
            connection.execute(
                text("UPDATE transfers SET enqueued = clock_timestamp() WHERE id = :id"),
                {"id": pending.id},
            )
        assert count(sync_db, "SELECT count(*) FROM webhook_events WHERE transfer_id = :id",
                     id=pending.id) == 0  # fmt: skip
        await settle(client, [str(pending.id)])
        assert count(sync_db, "SELECT count(*) FROM webhook_events WHERE transfer_id = :id",
                     id=pending.id) == 1  # fmt: skip


class TestMetrics:
    async def test_attempts_failures_and_the_undelivered_in_metrics(
        self, client: httpx.AsyncClient, app: FastAPI, new_endpoint: NewEndpoint
    ) -> None:
        from tests.api.test_metrics import parse, value

        async def scrape() -> dict[Any, float]:
            await asyncio.sleep(1.1)  # past the gauges' one-second cache
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
                response = await http.get("/metrics")
            assert response.status_code == 200
            return parse(response.text)

        before = await scrape()
        failing = Receiver(always(500))
        try:
            endpoint = await new_endpoint(failing.url, events=["transfer.completed"])
            _, _, transfer = await paid(client)
            await failing.wait_until(lambda r: len(r.for_transfer(transfer["id"])) >= 2)
            during = await scrape()
            assert value(during, "mini_ledger_webhook_undelivered") >= 1
            assert value(during, "mini_ledger_webhook_oldest_undelivered_age_seconds") > 0
            await wait_for_attempts(
                client, endpoint["id"], lambda log: any(a["next_attempt"] is None for a in log)
            )
        finally:
            failing.stop()
        after = await scrape()

        def grew(name: str, by: float, **labels: str) -> bool:
            return value(after, name, **labels) - value(before, name, **labels) >= by

        assert grew("mini_ledger_webhook_attempts_total", 5, outcome="retrying")
        assert grew("mini_ledger_webhook_attempts_total", 1, outcome="given_up")
        assert grew("mini_ledger_webhook_failures_total", 6, reason="http_status")
        delivered = ("mini_ledger_webhook_attempts_total", frozenset({("outcome", "delivered")}))
        assert delivered in after  # every outcome has its series from the start
