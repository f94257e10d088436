"""Dependencies as `Annotated` aliases: what a route needs, named once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.domain.access import Actor
from shared.domain.errors import InvalidInput
from shared.domain.transfers import parse_idempotency_key
from shared.infra.database import Database
from shared.infra.notifications import FinalStateWaiter
from shared.services.recording import PendingRecorder
from shared.services.transfers import MAX_WAIT_S

_WAIT_PREFERENCE = re.compile(r"(?:^|[,;])\s*wait\s*=\s*(\d+)\s*(?:$|[,;])", re.IGNORECASE)


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


# Declared for OpenAPI ("Authorize" in Swagger UI); `api/auth.py` checks the key before the route.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer mlk_…`")


async def _actor(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Actor:
    actor: Actor = request.state.actor
    return actor


@dataclass(frozen=True, slots=True)
class SubmissionContext:
    """What a submission route needs from the app and the request besides its body, key, caller
    and wait preference: one dependency, since FastAPI resolves each dependency on its own and
    five of them cost a submission more than its own checks did."""

    db: Database
    recorder: PendingRecorder
    waiter: FinalStateWaiter
    request_id: str | None
    # `/v1` on a versioned request, empty on an alias: `Location` names the same family.
    prefix: str


async def _request_id(request: Request) -> str | None:
    request_id: str | None = getattr(request.state, "request_id", None)
    return request_id


async def _submission_context(request: Request) -> SubmissionContext:
    state = request.app.state
    return SubmissionContext(
        db=state.database,
        recorder=state.recorder,
        waiter=state.waiter,
        request_id=await _request_id(request),
        prefix="/v1" if request.scope["path"].startswith("/v1/") else "",
    )


async def _idempotency_key(
    key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            description="1-255 visible ASCII characters; one key, one transfer, ever.",
        ),
    ],
) -> str:
    try:
        return parse_idempotency_key(key)
    except InvalidInput as error:
        raise InvalidInput(error.message, field="header.Idempotency-Key") from error


async def _wait_preference(
    prefer: Annotated[
        str | None,
        Header(description="RFC 7240; `wait=N` (N <= 30) waits up to N s for a final state."),
    ] = None,
) -> int | None:
    """Seconds the client prefers to wait (capped at 30), or None. A malformed hint is ignored.

    Any number of digits is a number: one longer than the cap's is the cap, without `int()`
    (which refuses more than 4,300 digits).
    """
    if prefer is None or (match := _WAIT_PREFERENCE.search(prefer)) is None:
        return None
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > len(str(MAX_WAIT_S)):
        return MAX_WAIT_S
    return min(int(digits), MAX_WAIT_S)


DB = Annotated[Database, Depends(_database)]
Caller = Annotated[Actor, Depends(_actor)]
RequestId = Annotated[str | None, Depends(_request_id)]
Submitting = Annotated[SubmissionContext, Depends(_submission_context)]
IdempotencyKey = Annotated[str, Depends(_idempotency_key)]
WaitPreference = Annotated[int | None, Depends(_wait_preference)]
