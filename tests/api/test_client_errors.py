"""No 500 a client can cause: huge or foreign numbers, NUL characters, absurd `Prefer` values
and oversized request heads are 4xx in SPEC's envelope; an unexpected fault is a 500 that
carries its request id, on the answer and on its log line."""

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from api.main import create_app, lifespan
from api.protocol import HeadLimitedHttpToolsProtocol
from shared.infra.config import load_settings
from tests.conftest import ADMIN_HEADERS
from tests.e2e.conftest import free_port
from tests.helpers import create_merchant, funded_merchant, submit, unique

JSON = {"Content-Type": "application/json"}


def _transfer_body(amount: str) -> bytes:
    """A transfer with `amount` written into the JSON as is (a number when unquoted)."""
    return (
        f'{{"from_merchant": "a", "to_merchant": "b", "amount": {amount}, "currency": "USD"}}'
    ).encode()


class TestNumbers:
    @pytest.mark.parametrize("amount", ["1e1000000", '"1e1000000"', '"-1e1000000"'])
    async def test_huge_exponent_is_422(self, api_client: httpx.AsyncClient, amount: str) -> None:
        response = await api_client.post(
            "/transfers",
            content=_transfer_body(amount),
            headers={**JSON, "Idempotency-Key": unique()},
        )
        assert response.status_code == 422
        message = "Amount must be less than 100000000000000000000"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.amount", "message": message}],
        }

    async def test_exponent_past_decimals_range_is_invalid_json(
        self, api_client: httpx.AsyncClient
    ) -> None:
        response = await api_client.post(
            "/transfers",
            content=_transfer_body("1e99999999999999999999"),
            headers={**JSON, "Idempotency-Key": unique()},
        )
        assert response.status_code == 422
        assert response.json()["error"] == ["Invalid JSON: Number out of range"]

    async def test_huge_amount_refuses_only_its_batch_item(
        self, api_client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(api_client, "10")
        receiver = await create_merchant(api_client)
        item = {"from_merchant": sender["name"], "to_merchant": receiver["name"], "currency": "USD"}
        as_number = json.dumps({**item, "idempotency_key": unique(), "amount": "X"})
        items = [
            as_number.replace('"X"', "1e1000000"),
            json.dumps({**item, "idempotency_key": unique(), "amount": "1e1000000"}),
            json.dumps({**item, "idempotency_key": unique(), "amount": "1"}),
        ]
        body = '{"transfers": [' + ", ".join(items) + "]}"
        response = await api_client.post("/batches", content=body, headers=JSON)
        assert response.status_code == 202
        result = response.json()["result"]
        assert (result["accepted"], result["refused"]) == (1, 2)
        message = "Amount must be less than 100000000000000000000"
        expected = {
            "status": 422,
            "message": [message],
            "details": [{"field": "body.amount", "message": message}],
        }
        assert result["items"][0]["error"] == expected
        assert result["items"][1]["error"] == expected
        assert result["items"][2]["transfer"]["state"] == "pending"

    @pytest.mark.parametrize(
        ("path", "field", "value", "message"),
        [
            ("/transfers", "amount", "١٢", "Amount must be a decimal number"),
            ("/transfers", "amount", "1\u00a0", "Amount must be a decimal number"),
            ("/merchants", "percent_fee", "٢", "Percent fee must be a decimal number"),
        ],
    )
    async def test_only_ascii_digits(
        self, api_client: httpx.AsyncClient, path: str, field: str, value: str, message: str
    ) -> None:
        body = {"from_merchant": "a", "to_merchant": "b", "amount": "1", "currency": "USD"}
        if path == "/merchants":
            body = {"name": unique(), "percent_fee": "1"}
        response = await api_client.post(
            path, json={**body, field: value}, headers={"Idempotency-Key": unique()}
        )
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": f"body.{field}", "message": message}],
        }

    async def test_initial_amount_only_ascii_digits(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        response = await api_client.post(
            "/merchants/balance",
            json={"merchant_id": merchant["id"], "currency": "USD", "initial_amount": "١٢"},
        )
        message = "Initial amount must be a decimal number"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.initial_amount", "message": message}],
        }


class TestNulCharacters:
    @pytest.mark.parametrize(
        ("url", "field"),
        [
            ("/merchants/%00", "path"),
            ("/merchants/a%00b/balance", "path"),
            ("/transfers?from=a%00b", "query.from"),
            ("/transfers?to=%00", "query.to"),
            ("/transfers?cursor=%00", "query.cursor"),
            ("/batches/%00", "path"),
        ],
    )
    async def test_in_path_or_query_is_422(
        self, api_client: httpx.AsyncClient, url: str, field: str
    ) -> None:
        response = await api_client.get(url)
        assert response.status_code == 422
        message = "Path and query must not contain NUL characters"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": field, "message": message}],
        }
        assert response.headers["x-request-id"]

    async def test_in_a_body_name_is_422(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post("/merchants", json={"name": "a\x00b", "percent_fee": 1})
        message = "Name must not contain '/' or control characters"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body.name", "message": message}],
        }
        response = await submit(api_client, "a\x00b", "b", "1")
        assert response.status_code == 422

    async def test_lone_surrogates_in_a_body_are_422(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post(
            "/merchants/balance",
            content=b'{"merchant_id": "\\ud800", "currency": "\\udfff", "initial_amount": 1}',
            headers=JSON,
        )
        assert response.status_code == 422


class TestPreferWait:
    async def test_five_thousand_digits_is_the_cap(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        response = await submit(
            client, sender["name"], receiver["name"], "1", headers={"Prefer": "wait=" + "9" * 5000}
        )
        assert response.status_code == 200
        assert response.headers["preference-applied"] == "wait=30"

    async def test_leading_zeros_do_not_make_a_number_long(self, client: httpx.AsyncClient) -> None:
        sender = await funded_merchant(client, "10")
        receiver = await create_merchant(client)
        response = await submit(
            client, sender["name"], receiver["name"], "1", headers={"Prefer": "wait=" + "0" * 5000}
        )
        assert response.status_code == 202
        assert response.headers["preference-applied"] == "wait=0"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):  # structlog's event, before rendering
            self.events.append(record.msg)


class TestUnexpectedError:
    async def test_500_carries_the_request_id_on_answer_and_log(self) -> None:
        app = create_app(load_settings())

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("a bug")

        records = _Records()
        logging.getLogger().addHandler(records)
        try:
            transport = httpx.ASGITransport(app=app)
            async with (
                lifespan(app),
                httpx.AsyncClient(
                    transport=transport, base_url="http://ledger", headers=ADMIN_HEADERS
                ) as http,
            ):
                response = await http.get("/boom", headers={"X-Request-ID": "trace-500"})
        finally:
            logging.getLogger().removeHandler(records)
        assert response.status_code == 500
        assert response.json() == {"status": 500, "error": "Internal server error"}
        assert response.headers["x-request-id"] == "trace-500"
        errors = [event for event in records.events if event["event"] == "unexpected error"]
        assert [event["request_id"] for event in errors] == ["trace-500"]
        assert errors[0]["kind"] == "RuntimeError"


@pytest.fixture(scope="module")
def limited_server() -> Iterator[str]:
    """A real uvicorn server with the API's protocol, and the API's lifespan (its key cache)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(load_settings()),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        http=HeadLimitedHttpToolsProtocol,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


class TestRequestHeadLimits:
    def test_a_head_within_limits_is_served(self, limited_server: str) -> None:
        headers = {f"x-h{i}": "v" for i in range(90)} | {"x-big": "v" * 12_000}
        response = httpx.get(f"{limited_server}/nowhere", headers=headers)
        # Past the protocol's limits, the app answered: no key, so 401 (not 431).
        assert response.status_code == 401

    @pytest.mark.parametrize(
        "headers",
        [
            {"x-big": "v" * 20_000},
            {f"x-h{i}": "v" for i in range(101)},
        ],
        ids=["one 20 KB header", "101 headers"],
    )
    def test_over_the_limit_is_431(self, limited_server: str, headers: dict[str, str]) -> None:
        response = httpx.get(f"{limited_server}/nowhere", headers=headers)
        assert response.status_code == 431
        assert response.json() == {"status": 431, "error": "Request header fields too large"}
        assert response.headers["x-request-id"]

    def test_a_64_mib_header_is_refused_without_being_read(self, limited_server: str) -> None:
        try:
            response = httpx.get(f"{limited_server}/nowhere", headers={"x-big": "v" * 2**26})
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
            return  # the server closed the connection while the client was still sending
        assert response.status_code == 431
