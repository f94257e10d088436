"""Liveness of the process and of its dependencies."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import DB
from shared.services.health import check_dependencies

router = APIRouter(tags=["operations"])


@router.get("/health", summary="200 when the database and Redis answer, 503 otherwise")
async def health(request: Request, db: DB) -> JSONResponse:
    report = await check_dependencies(db, request.app.state.redis)
    status = 200 if all(report.values()) else 503
    return JSONResponse({"status": status, "result": report}, status_code=status)
