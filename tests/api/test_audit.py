"""`GET /v1/audit` (admin) and `mini-ledger audit`: the same result, ok or the problems found;
who may ask; the CLI's exit codes. What each invariant catches: tests/shared/test_audit.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shared.infra.database import SyncDatabase
from shared.services.operations import AUDIT_KEY
from tests.api.test_movements import bearer, merchant_key
from tests.conftest import ROOT
from tests.helpers import funded_merchant

pytestmark = pytest.mark.integration

FIELDS = {"ok", "checked_at", "transfers", "entries", "pending", "problems"}
ONE_BALANCE_OFF = "1 balance does not match the journal"


@pytest.fixture
async def keyless(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        yield http


@pytest.fixture(scope="module")
async def merchant(api_client: httpx.AsyncClient) -> dict[str, Any]:
    return await funded_merchant(api_client, "100")


@contextmanager
def balance_off(sync_db: SyncDatabase, merchant_id: str) -> Iterator[None]:
    """The merchant's balance claims one entry more than the journal has, until the block
    ends (committed, so that other connections see it; set right again at the end)."""
    statement = "UPDATE accounts SET version = version + :by WHERE merchant_id = :merchant"
    with sync_db.transaction() as connection:
        connection.execute(text(statement), {"by": 1, "merchant": merchant_id})
    try:
        yield
    finally:
        with sync_db.transaction() as connection:
            connection.execute(text(statement), {"by": -1, "merchant": merchant_id})


def cli_audit() -> subprocess.CompletedProcess[str]:
    """`mini-ledger audit` on the test database (the environment names its servers)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "audit"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestHttp:
    async def test_a_healthy_ledger(
        self, api_client: httpx.AsyncClient, merchant: dict[str, Any]
    ) -> None:
        response = await api_client.get("/v1/audit")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == 200
        result = body["result"]
        assert set(result) == FIELDS
        assert result["ok"] is True and result["problems"] == []
        assert result["checked_at"].endswith("Z")
        # At least the merchant's initial amount: two entries, no transfer.
        assert result["entries"] >= 2 and result["transfers"] >= 0 and result["pending"] >= 0

    async def test_the_unversioned_alias(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/audit")
        assert response.status_code == 200
        assert set(response.json()["result"]) == FIELDS

    async def test_a_broken_ledger(
        self, api_client: httpx.AsyncClient, sync_db: SyncDatabase, merchant: dict[str, Any]
    ) -> None:
        with balance_off(sync_db, merchant["id"]):
            response = await api_client.get("/v1/audit")
        assert response.status_code == 200
        result = response.json()["result"]
        assert result["ok"] is False
        assert result["problems"] == [ONE_BALANCE_OFF]

    async def test_the_outcome_is_kept_for_metrics(
        self, api_client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await app.state.redis.delete(AUDIT_KEY)
        response = await api_client.get("/v1/audit")
        assert response.status_code == 200
        kept = await app.state.redis.hgetall(AUDIT_KEY)
        assert kept[b"ok"] == b"1" and kept[b"problems"] == b"0"


class TestAccess:
    async def test_without_a_key(self, keyless: httpx.AsyncClient) -> None:
        response = await keyless.get("/v1/audit")
        assert response.status_code == 401
        assert response.json() == {"status": 401, "error": "Missing or invalid API key"}
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("scope", ["write", "read"])
    async def test_a_merchant_key_is_forbidden(
        self,
        api_client: httpx.AsyncClient,
        keyless: httpx.AsyncClient,
        merchant: dict[str, Any],
        scope: str,
    ) -> None:
        secret = await merchant_key(api_client, merchant["name"], scope)
        response = await keyless.get("/v1/audit", headers=bearer(secret))
        assert response.status_code == 403
        assert response.json() == {"status": 403, "error": "Forbidden"}


class TestCli:
    def test_a_healthy_ledger_exits_0(self) -> None:
        done = cli_audit()
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert set(result) == FIELDS
        assert result["ok"] is True and result["problems"] == []

    def test_a_broken_ledger_exits_1(self, sync_db: SyncDatabase, merchant: dict[str, Any]) -> None:
        with balance_off(sync_db, merchant["id"]):
            done = cli_audit()
        assert done.returncode == 1, done.stdout + done.stderr
        result = json.loads(done.stdout)  # the JSON alone on stdout
        assert result["ok"] is False
        assert result["problems"] == [ONE_BALANCE_OFF]

    async def test_the_same_result_as_the_api(
        self, api_client: httpx.AsyncClient, sync_db: SyncDatabase, merchant: dict[str, Any]
    ) -> None:
        with balance_off(sync_db, merchant["id"]):
            response = await api_client.get("/v1/audit")
            done = cli_audit()
        from_api = response.json()["result"]
        from_cli = json.loads(done.stdout)
        assert set(from_cli) == set(from_api) == FIELDS
        # The counts may move between the two (the session's workers settle what others left).
        assert (from_cli["ok"], from_cli["problems"]) == (False, from_api["problems"])
