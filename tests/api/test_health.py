"""`/health` (liveness: touches nothing) and `/ready` (readiness: the database and Redis)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from api.main import create_app, lifespan
from shared.infra.config import Settings, load_settings


def closed_port() -> int:
    """A port on this machine where nothing listens: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def keyless_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A whole app of its own on these settings, and a client that sends no API key."""
    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
            yield http


def without(database: bool = True, redis: bool = True) -> Settings:
    settings = load_settings()
    if not database:
        settings = dataclasses.replace(
            settings, postgres_host="127.0.0.1", postgres_port=closed_port()
        )
    if not redis:
        settings = dataclasses.replace(settings, redis_host="127.0.0.1", redis_port=closed_port())
    return settings


class TestHealth:
    async def test_health_is_200_with_no_key(self) -> None:
        async with keyless_client(load_settings()) as http:
            response = await http.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": 200, "result": {"alive": True}}

    async def test_health_touches_nothing_so_it_is_200_with_both_down(self) -> None:
        async with keyless_client(without(database=False, redis=False)) as http:
            health = await http.get("/health")
            ready = await http.get("/ready")
        assert health.status_code == 200
        assert health.json() == {"status": 200, "result": {"alive": True}}
        # The same app cannot serve: readiness says so, naming both.
        assert ready.status_code == 503
        assert ready.json() == {"status": 503, "result": {"database": False, "redis": False}}


class TestReady:
    async def test_ready_is_200_when_both_answer(self) -> None:
        async with keyless_client(load_settings()) as http:
            response = await http.get("/ready")
        assert response.status_code == 200
        assert response.json() == {"status": 200, "result": {"database": True, "redis": True}}

    async def test_ready_names_redis_when_only_redis_is_down(self) -> None:
        async with keyless_client(without(redis=False)) as http:
            response = await http.get("/ready")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"status": 503, "result": {"database": True, "redis": False}}

    async def test_ready_names_the_database_when_only_it_is_down(self) -> None:
        async with keyless_client(without(database=False)) as http:
            response = await http.get("/ready")
        assert response.status_code == 503
        assert response.json() == {"status": 503, "result": {"database": False, "redis": True}}
