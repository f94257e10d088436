"""Liveness of the process and its dependencies, and the numbers an operator alerts on."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import DB, Caller
from api.errors import error_responses
from api.responses import envelope
from api.schemas import Envelope, QueueStatusRead
from shared.services.health import check_dependencies
from shared.services.operations import queue_status

# Unversioned and open to anyone who reaches the port: what probes and scrapers call.
public_router = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"])


@public_router.get("/health", summary="200 when the database and Redis answer, 503 otherwise")
async def health(request: Request, db: DB) -> JSONResponse:
    report = await check_dependencies(db, request.app.state.redis)
    status = 200 if all(report.values()) else 503
    return JSONResponse({"status": status, "result": report}, status_code=status)


@router.get(
    "/ops/queue",
    response_model=Envelope[QueueStatusRead],
    responses=error_responses(403, 503),
    summary="Queue depth, pending transfers and the age of the oldest (admin; for alerting)",
)
async def queue(request: Request, db: DB, actor: Caller) -> JSONResponse:
    status = await queue_status(db, actor, request.app.state.redis)
    return envelope(QueueStatusRead.model_validate(status, from_attributes=True))
