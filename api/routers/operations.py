"""Probes, the scrape, and the numbers an operator alerts on.

`/health`, `/ready` and `/metrics` are unversioned and open to anyone who reaches the port
(`api/auth.py`): what probes and Prometheus call. `/metrics` names routes, kinds and counts,
never a merchant, an amount or a key; keep the port on a private network or behind a proxy that
does not route `/metrics` from outside (README, "Operating Mini Ledger").
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import DB, Caller
from api.errors import RETRY_AFTER_S, error_responses
from api.metrics import CONTENT_TYPE, exposition
from api.responses import envelope
from api.schemas import Envelope, QueueStatusRead
from shared.services.health import check_dependencies
from shared.services.operations import ledger_snapshot, queue_status

public_router = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"])


@public_router.get(
    "/health",
    summary="Liveness: 200 while the process serves; touches no database, no Redis",
    responses={
        200: {
            "content": {"application/json": {"example": {"status": 200, "result": {"alive": True}}}}
        }
    },
)
async def health() -> JSONResponse:
    return JSONResponse({"status": 200, "result": {"alive": True}})


@public_router.get(
    "/ready",
    summary="Readiness: 200 when the database and Redis answer, else 503 naming which did not",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"status": 200, "result": {"database": True, "redis": True}}
                }
            }
        },
        503: {
            "content": {
                "application/json": {
                    "example": {"status": 503, "result": {"database": True, "redis": False}}
                }
            }
        },
    },
)
async def ready(request: Request, db: DB) -> JSONResponse:
    report = await check_dependencies(db, request.app.state.redis)
    if all(report.values()):
        return JSONResponse({"status": 200, "result": report})
    return JSONResponse(
        {"status": 503, "result": report},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# Not in the OpenAPI schema: Prometheus's text format, for the scraper, not the API's clients
# (whose every answer is JSON).
@public_router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request, db: DB) -> Response:
    state = request.app.state
    snapshot = await ledger_snapshot(db, state.redis, state.gauge_cache)
    # Reading the processes' files is blocking I/O: off the event loop.
    body = await run_in_threadpool(exposition, snapshot)
    return Response(body, media_type=CONTENT_TYPE)


@router.get(
    "/ops/queue",
    response_model=Envelope[QueueStatusRead],
    responses=error_responses(403, 503),
    summary="Queue depth, pending transfers and the age of the oldest (admin; for alerting)",
)
async def queue(request: Request, db: DB, actor: Caller) -> JSONResponse:
    status = await queue_status(db, actor, request.app.state.redis)
    return envelope(QueueStatusRead.model_validate(status, from_attributes=True))
