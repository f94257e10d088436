"""No input, however bad, gets anything but SPEC's JSON envelope."""

import dataclasses

import httpx

from api.main import create_app, lifespan
from shared.infra.config import load_settings
from tests.conftest import ADMIN_HEADERS
from tests.helpers import unique

JSON = {"Content-Type": "application/json"}


class TestMalformedRequests:
    async def test_invalid_json_is_422(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post("/merchants", content=b'{"name": ', headers=JSON)
        assert response.status_code == 422
        assert response.json()["status"] == 422
        assert response.json()["error"][0].startswith("Invalid JSON")

    async def test_body_not_utf8_is_422(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post(
            "/merchants", content=b'{"name": "\xff\xfe", "percent_fee": 1}', headers=JSON
        )
        assert response.status_code == 422
        message = "Invalid JSON: Body is not valid UTF-8"
        assert response.json() == {
            "status": 422,
            "error": [message],
            "details": [{"field": "body", "message": message}],
        }

    async def test_body_not_an_object_is_422(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.post("/merchants", content=b"[1, 2]", headers=JSON)
        assert response.status_code == 422

    async def test_too_large_body_is_413(self, api_client: httpx.AsyncClient) -> None:
        body = b'{"name": "' + b"x" * 100_000 + b'", "percent_fee": 1}'
        response = await api_client.post("/merchants", content=body, headers=JSON)
        assert response.status_code == 413
        assert response.json() == {"status": 413, "error": "Request body too large"}

    async def test_too_large_chunked_body_is_413(self, api_client: httpx.AsyncClient) -> None:
        async def chunks():  # no Content-Length: the limit counts what arrives
            for _ in range(100):
                yield b"x" * 1000

        response = await api_client.post("/merchants", content=chunks(), headers=JSON)
        assert response.status_code == 413

    async def test_unknown_route_is_json_404(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/nowhere")
        assert response.status_code == 404
        assert response.json() == {"status": 404, "error": "Not Found"}

    async def test_wrong_method_is_json_405(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.delete("/transfers")
        assert response.status_code == 405
        assert response.json() == {"status": 405, "error": "Method Not Allowed"}

    async def test_every_response_carries_a_request_id(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/nowhere", headers={"X-Request-ID": "trace-me-123"})
        assert response.headers["x-request-id"] == "trace-me-123"
        response = await api_client.get("/nowhere", headers={"X-Request-ID": "bad id with spaces"})
        assert response.headers["x-request-id"] != "bad id with spaces"


class TestDependencyDown:
    async def test_database_unreachable_is_503_with_retry_after(self) -> None:
        # A real server address where nothing listens: the connection is refused.
        settings = load_settings()
        unreachable = dataclasses.replace(settings, postgres_host="127.0.0.1", postgres_port=1)
        app = create_app(unreachable)
        async with lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://ledger", headers=ADMIN_HEADERS
            ) as http:
                response = await http.post("/merchants", json={"name": unique(), "percent_fee": 1})
                health = await http.get("/ready")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {
            "status": 503,
            "error": "Database is unavailable, try again later",
        }
        assert health.status_code == 503
        assert health.json()["result"]["database"] is False

    async def test_ready_is_200_when_everything_answers(
        self, api_client: httpx.AsyncClient
    ) -> None:
        response = await api_client.get("/ready")
        assert response.json() == {"status": 200, "result": {"database": True, "redis": True}}
