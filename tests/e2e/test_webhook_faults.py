"""Webhooks under faults, with real processes: a receiver that is down during a burst gets every
event once it is back, and a worker SIGKILLed in the middle of a delivery loses nothing (the
delivery is sent again when its lease runs out). The session's retry schedule is short
(`tests/conftest.py`): about 7 s from the first attempt to giving up."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psutil
import pytest
from standardwebhooks.webhooks import Webhook

from shared.infra.database import SyncDatabase
from tests.helpers import assert_ledger_consistent, funded_merchant, settle, unique
from tests.webhook_receiver import Received, Receiver

LEASE_WAIT_S = 90


@pytest.fixture
async def endpoint_for(client: httpx.AsyncClient) -> AsyncIterator[Any]:
    created: list[str] = []

    async def create(receiver: Receiver) -> dict[str, Any]:
        response = await client.post("/v1/webhook-endpoints", json={"url": receiver.url})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["result"]
        created.append(result["id"])
        return result

    yield create
    for endpoint_id in created:
        await client.delete(f"/v1/webhook-endpoints/{endpoint_id}")


async def burst(client: httpx.AsyncClient, sender: str, receiver: str, n: int) -> list[str]:
    items = [
        {
            "idempotency_key": unique("wh"),
            "from_merchant": sender,
            "to_merchant": receiver,
            "amount": "1",
            "currency": "USD",
        }
        for _ in range(n)
    ]
    response = await client.post("/v1/batches", json={"transfers": items})
    assert response.status_code == 202, response.text
    return [item["transfer"]["id"] for item in response.json()["result"]["items"]]


class TestReceiverDown:
    async def test_every_event_of_a_burst_arrives_once_the_receiver_is_back(
        self, client: httpx.AsyncClient, endpoint_for: Any, sync_db: SyncDatabase
    ) -> None:
        receiver = Receiver()
        try:
            endpoint = await endpoint_for(receiver)
            receiver.stop()  # connections refused from now on
            sender = await funded_merchant(client, "1000")
            payee = await funded_merchant(client, "0")
            ids = await burst(client, sender["name"], payee["name"], 300)
            await settle(client, ids)
            # Attempts fail while it is down (and are logged as such)...
            log_path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?limit=1000"
            deadline = time.monotonic() + 30
            while True:
                log = (await client.get(log_path)).json()["result"]
                if sum(1 for a in log if a["error"] is not None) >= len(ids):
                    break
                assert time.monotonic() < deadline, f"{len(log)} attempts"
                await asyncio.sleep(0.1)
            assert all(a["status_code"] is None and not a["delivered"] for a in log)
            receiver.start()  # ...and it is back on the same port.
            await receiver.wait_until(lambda r: all(r.for_transfer(i) for i in ids))
            await asyncio.sleep(1.0)
            delivered = [r.event["data"]["id"] for r in receiver.received]
            assert sorted(delivered) == sorted(ids)  # every one, none twice
            for received in receiver.received:
                Webhook(endpoint["secret"]).verify(received.body, received.headers)
            assert_ledger_consistent(sync_db)
        finally:
            receiver.stop()


class TestWorkerKilled:
    async def test_a_worker_killed_mid_delivery_sends_it_again(
        self, client: httpx.AsyncClient, endpoint_for: Any
    ) -> None:
        held = threading.Event()

        def respond(received: Received, count: int) -> int:
            if count == 1:
                held.wait(LEASE_WAIT_S)  # the first attempt hangs until the test lets go
            return 200

        receiver = Receiver(respond)
        try:
            endpoint = await endpoint_for(receiver)
            sender = await funded_merchant(client, "10")
            payee = await funded_merchant(client, "0")
            (transfer_id,) = await burst(client, sender["name"], payee["name"], 1)
            await receiver.wait_until(lambda r: bool(r.for_transfer(transfer_id)))
            (first,) = receiver.for_transfer(transfer_id)
            sending = _process_connected_from(first.peer_port)
            assert "celery" in " ".join(sending.cmdline()), sending.cmdline()
            os.kill(sending.pid, signal.SIGKILL)  # the worker process sending it, mid-request
            held.set()
            await receiver.wait_until(
                lambda r: len(r.for_transfer(transfer_id)) >= 2, timeout_s=LEASE_WAIT_S
            )
            again = receiver.for_transfer(transfer_id)[1]
            assert (again.id, again.body) == (first.id, first.body)
            Webhook(endpoint["secret"]).verify(again.body, again.headers)
            path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
            for _ in range(100):
                log = (await client.get(path)).json()["result"]
                if log:
                    break
                await asyncio.sleep(0.1)
            # The killed attempt left no line (its worker died before recording it).
            assert [(a["event_id"], a["delivered"]) for a in log] == [(first.id, True)]
        finally:
            held.set()
            receiver.stop()


def _process_connected_from(port: int) -> psutil.Process:
    """The process whose TCP connection to the receiver has this local port."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.laddr and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    raise AssertionError(f"no process has a connection from port {port}")
