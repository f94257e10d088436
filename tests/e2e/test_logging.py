"""Structured logs: the request id of a submission shows up in the worker's lines for it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import ADMIN_HEADERS
from tests.e2e.conftest import Stack
from tests.helpers import create_merchant, funded_merchant, settle, submit, unique

pytestmark = pytest.mark.e2e


async def test_request_id_travels_from_api_to_worker() -> None:
    stack = Stack(env={"LOG_LEVEL": "INFO"})
    stack.start()
    try:
        async with httpx.AsyncClient(
            base_url=stack.url, timeout=30, headers=ADMIN_HEADERS
        ) as client:
            sender = await funded_merchant(client, "10")
            receiver = await create_merchant(client)
            request_id = unique("trace")
            response = await submit(
                client, sender["name"], receiver["name"], "1", headers={"X-Request-ID": request_id}
            )
            transfer_id = response.json()["result"]["id"]
            await settle(client, [transfer_id])
    finally:
        stack.stop()
    api_log = stack.processes_log(stack.api_pid)
    worker_log = stack.processes_log(stack.worker.pid)
    api_lines = [json.loads(line) for line in api_log.splitlines() if line.startswith("{")]
    worker_lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    assert any(
        line.get("request_id") == request_id and line["event"] == "request finished"
        for line in api_lines
    )
    completed = [line for line in worker_lines if line["event"] == "transfer completed"]
    assert [line["request_id"] for line in completed] == [request_id]
    assert completed[0]["transfer_id"] == transfer_id
    # Every line a request logs carries its id.
    assert all("request_id" in line for line in api_lines if line["logger"] == "api.request")
