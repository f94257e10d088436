"""The ledger audit (admin): every invariant of SPEC.md, checked from the database."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import DB, Caller
from api.errors import error_responses
from api.responses import envelope
from api.schemas import AuditRead, Envelope
from shared.services.audit import audit

router = APIRouter(tags=["operations"])


@router.get(
    "/audit",
    response_model=Envelope[AuditRead],
    responses=error_responses(403, 503),
    summary="Check every ledger invariant from the database (admin); ok, or the problems found",
)
async def get_audit(request: Request, db: DB, actor: Caller) -> JSONResponse:
    report = await audit(db, actor, request.app.state.redis)
    return envelope(AuditRead.model_validate(report.result()))
