"""The FastAPI application: `create_app()` wires routers, errors and middleware; `lifespan()`
owns the connections of one API process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from api import console
from api.auth import AuthMiddleware, KeyCache, RateLimiter
from api.docs import create_documented_app
from api.errors import install_error_handlers
from api.metrics import RECORDED_GROUP_SIZE, SubmissionFlusher, instrument
from api.middleware import BodyLimitMiddleware, NulRefusalMiddleware, RequestIdMiddleware
from api.routers import (
    api_keys,
    audit,
    batches,
    fx_rates,
    merchants,
    movements,
    operations,
    transfers,
    webhooks,
)
from shared.infra.config import Settings, get_settings
from shared.infra.database import Database
from shared.infra.engine import create_api_engine
from shared.infra.logging import configure_logging
from shared.infra.notifications import FinalStateWaiter
from shared.infra.queue import TransferPublisher
from shared.services.api_keys import authenticate
from shared.services.recording import PendingRecorder

# Bodies of single requests are small; batches (POST /batches) set their own, larger limit.
MAX_BODY_BYTES = 64 * 1024
API_VERSION_PREFIX = "/v1"
VERSIONED_ROUTERS = (
    merchants.router,
    transfers.router,
    movements.router,
    batches.router,
    operations.router,
    api_keys.router,
    audit.router,
    fx_rates.router,
    webhooks.router,
)
REDIS_SOCKET_TIMEOUT_S = 5
DESCRIPTION = """\
Every request but `/health`, `/ready`, `/metrics`, `/docs` and `/openapi.json` carries
`Authorization: Bearer <API key>` (**Authorize** above; `make run` prints the admin key and keeps
it in `.mini-ledger/admin.key`).

Every body repeats its status: `{"status": 200, "result": ...}`, `{"status": 404, "error":
"..."}`, and for a malformed request `{"status": 422, "error": ["..."], "details": [{"field":
"body.amount", "message": "..."}]}`.

The examples run as-is once merchants `alice` (2% fee) and `bob` exist and alice holds BTC
(`POST /v1/merchants`, then `POST /v1/merchants/balance` with alice's id).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_api_engine(settings)
    # Pub/sub reads block until a notice arrives, so no socket read timeout on this client.
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S)
    waiter = FinalStateWaiter(redis)
    waiter.start()
    flusher = SubmissionFlusher(redis)
    flusher.start()
    database = Database(engine)
    publisher = TransferPublisher(settings.redis_url)
    recorder = PendingRecorder(database, publisher, on_group=RECORDED_GROUP_SIZE.observe)
    app.state.database = database
    app.state.publisher = publisher
    app.state.recorder = recorder
    app.state.redis = redis
    app.state.waiter = waiter
    app.state.key_cache = KeyCache(lambda secret: authenticate(database, secret))
    app.state.rate_limiter = RateLimiter(settings)
    try:
        yield
    finally:
        await recorder.close()
        await publisher.aclose()
        await waiter.stop()
        await flusher.stop()
        await redis.aclose()
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    app = create_documented_app(
        title="Mini Ledger",
        version="0.1.0",
        summary="Queue-backed multi-currency transfers between merchants, exactly once.",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_bytes=MAX_BODY_BYTES,
        limits_by_path={
            "/batches": batches.MAX_BATCH_BODY_BYTES,
            f"{API_VERSION_PREFIX}/batches": batches.MAX_BATCH_BODY_BYTES,
        },
    )
    app.add_middleware(NulRefusalMiddleware)
    # Before anything else reads the request: a 401 wins over 404, 413 and 422.
    app.add_middleware(AuthMiddleware)
    # Counts and times every answer by route template, a 401 or a 413 too (`api/metrics.py`).
    instrument(app)
    # Outermost (added last): its id is on every answer, its scope around every log line.
    app.add_middleware(RequestIdMiddleware)
    app.include_router(operations.public_router)
    # The operator console: HTML pages on the same services, a session of its own, not in OpenAPI.
    app.include_router(console.router)
    for router in VERSIONED_ROUTERS:
        app.include_router(router, prefix=API_VERSION_PREFIX)
        # The seed's unversioned paths keep working as exact aliases; OpenAPI shows /v1.
        app.include_router(router, include_in_schema=False)
    return app
