"""API keys (admin): create (the secret is shown once), list, revoke."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import DB, Caller
from api.errors import error_responses
from api.exact_json import ExactJSONRoute
from api.responses import envelope
from api.schemas import ApiKeyCreate, ApiKeyCreatedRead, ApiKeyRead, Envelope
from shared.services import api_keys

router = APIRouter(prefix="/api-keys", tags=["api keys"], route_class=ExactJSONRoute)


@router.post(
    "",
    response_model=Envelope[ApiKeyCreatedRead],
    responses=error_responses(403, 404, 413, 422, 503),
    summary="Create an API key (admin); its secret is in this answer only",
)
async def create_api_key(body: ApiKeyCreate, db: DB, actor: Caller) -> JSONResponse:
    created = await api_keys.create_api_key(
        db, actor, body.name, body.merchant, body.scope, body.rate_limit
    )
    read = ApiKeyRead.model_validate(created.key)
    return envelope(ApiKeyCreatedRead.model_construct(**dict(read), secret=created.secret))


@router.get(
    "",
    response_model=Envelope[list[ApiKeyRead]],
    responses=error_responses(403, 503),
    summary="Every API key (admin), without secrets",
)
async def list_api_keys(db: DB, actor: Caller) -> JSONResponse:
    keys = await api_keys.list_api_keys(db, actor)
    return envelope([ApiKeyRead.model_validate(key) for key in keys])


@router.delete(
    "/{key_id}",
    response_model=Envelope[ApiKeyRead],
    responses=error_responses(403, 404, 422, 503),
    summary="Revoke an API key (admin); every API process refuses it within a second",
)
async def revoke_api_key(key_id: uuid.UUID, db: DB, actor: Caller) -> JSONResponse:
    key = await api_keys.revoke_api_key(db, actor, key_id)
    return envelope(ApiKeyRead.model_validate(key))
