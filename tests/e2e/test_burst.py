"""Every request gets an HTTP answer: a burst of submissions among many merchants, each on a
fresh TCP connection, then every transfer polled (fresh connections again) until final.

The API process is started with a soft limit of open files far below the burst, like a shell's
usual 1024 below a larger one: before `mini-ledger api` raised its own limit, accept() failed
with EMFILE and uvloop closed the waiting connections with no answer and no log line.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.infra.database import SyncDatabase
from tests.conftest import ADMIN_HEADERS, Processes
from tests.e2e.conftest import STARTUP_TIMEOUT_S, free_port
from tests.helpers import SETTLE_TIMEOUT_S, assert_ledger_consistent, unique

pytestmark = pytest.mark.e2e

SUBMISSIONS = 300
MERCHANTS = 20
# Far below SUBMISSIONS: each connection in flight is one file descriptor of the API process.
OPEN_FILES_AT_START = 256
_START_WITH_FEW_FILES = (
    "import resource, sys\n"
    "from cli.main import main\n"
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({OPEN_FILES_AT_START}, hard))\n"
    "sys.exit(main(['api']))\n"
)


@pytest.fixture(scope="module")
def api_url(workers: Processes) -> Iterator[str]:
    processes = Processes()
    port = free_port()
    processes.start("-c", _START_WITH_FEW_FILES, env={"HOST": "127.0.0.1", "PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"API on {url} did not start"
        time.sleep(0.2)
    yield url
    processes.stop_all()


@pytest.fixture
async def fresh(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that opens a new TCP connection for every request (no keep-alive)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=api_url, timeout=60, limits=limits, headers=ADMIN_HEADERS
    ) as client:
        yield client


class Answers:
    """Every request's outcome: an HTTP answer, or the transport error of a dropped one."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.dropped: list[str] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as error:
            self.dropped.append(f"{method} {url}: {type(error).__name__} {error}")
            return None
        body = response.json()
        assert body["status"] == response.status_code, body
        return response

    async def submit(self, sender: str, receiver: str) -> str | None:
        body = {"from_merchant": sender, "to_merchant": receiver, "amount": "0.01"}
        key = unique("burst")
        while True:  # 503 (pool busy) is an answer: retry it as a client would, same key
            response = await self.request(
                "POST",
                "/transfers",
                json={**body, "currency": "USD"},
                headers={"Idempotency-Key": key},
            )
            if response is None:
                return None
            if response.status_code != 503:
                assert response.status_code == 202, response.text
                transfer_id: str = response.json()["result"]["id"]
                return transfer_id
            await asyncio.sleep(float(response.headers["retry-after"]))

    async def settle(self, transfer_id: str) -> str | None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            response = await self.request("GET", f"/transfers/{transfer_id}")
            if response is None:
                return None
            if response.status_code == 200 and response.json()["result"]["state"] != "pending":
                state: str = response.json()["result"]["state"]
                return state
            await asyncio.sleep(0.2)
        raise AssertionError(f"transfer {transfer_id} still pending")


async def test_a_burst_on_fresh_connections_is_answered_in_full(
    fresh: httpx.AsyncClient, sync_db: SyncDatabase
) -> None:
    answers = Answers(fresh)
    names = [unique("burst") for _ in range(MERCHANTS)]
    for name in names:
        merchant = await fresh.post("/merchants", json={"name": name, "percent_fee": "1"})
        await fresh.post(
            "/merchants/balance",
            json={
                "merchant_id": merchant.json()["result"]["id"],
                "currency": "USD",
                "initial_amount": "100",
            },
        )
    pairs = [random.sample(names, 2) for _ in range(SUBMISSIONS)]
    submitted = await asyncio.gather(*(answers.submit(a, b) for a, b in pairs))
    transfer_ids = [transfer_id for transfer_id in submitted if transfer_id is not None]
    states = await asyncio.gather(*(answers.settle(i) for i in transfer_ids))

    assert answers.dropped == []
    assert len(transfer_ids) == SUBMISSIONS
    assert set(states) == {"completed"}
    total = Decimal(0)
    for name in names:
        response = await fresh.get(f"/merchants/{name}/balance")
        total += sum(Decimal(balance["amount"]) for balance in response.json()["result"])
    fees = SUBMISSIONS * Decimal("0.0001")  # 1% of 0.01 each, credited to the fee account
    assert total == MERCHANTS * Decimal(100) - fees
    assert_ledger_consistent(sync_db)


async def test_the_api_process_bounds_request_heads(fresh: httpx.AsyncClient) -> None:
    response = await fresh.get("/health", headers={"x-big": "v" * 20_000})
    assert response.status_code == 431
    assert response.json() == {"status": 431, "error": "Request header fields too large"}
