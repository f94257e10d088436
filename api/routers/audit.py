"""The ledger audit (admin): every invariant of SPEC.md, checked from the database."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.deps import DB, Caller
from api.errors import error_responses
from api.responses import envelope
from api.schemas import Envelope, Timestamp
from shared.services.audit import audit

router = APIRouter(tags=["operations"])


class AuditRead(BaseModel):
    """`GET /v1/audit`'s result, and what `mini-ledger audit` prints."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ok": False,
                    "checked_at": "2025-01-15T09:30:00.123456Z",
                    "transfers": 1000000,
                    "entries": 2782000,
                    "pending": 12,
                    "problems": ["3 balances do not match the journal"],
                }
            ]
        }
    )

    ok: bool
    checked_at: Timestamp
    transfers: int
    entries: int
    pending: int  # transfers on their way: not a problem
    problems: list[str]


@router.get(
    "/audit",
    response_model=Envelope[AuditRead],
    responses=error_responses(403, 503),
    summary="Check every ledger invariant from the database (admin); ok, or the problems found",
)
async def get_audit(request: Request, db: DB, actor: Caller) -> JSONResponse:
    report = await audit(db, actor, request.app.state.redis)
    return envelope(AuditRead.model_validate(report.result()))
