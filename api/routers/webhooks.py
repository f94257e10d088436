"""Webhook endpoints: create (the secret is shown once), list, delete; an endpoint's deliveries
log and a manual retry. Scoped by the key's owner: an admin key's endpoints receive every
merchant's events, a merchant key's those of transfers its merchant is party to."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from api.deps import DB, Caller
from api.errors import error_responses
from api.exact_json import ExactJSONRoute
from api.responses import envelope
from api.schemas import (
    EVENT_ID,
    Envelope,
    PageEnvelope,
    WebhookAttemptRead,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointCreatedRead,
    WebhookEndpointRead,
)
from shared.domain.errors import InvalidInput
from shared.domain.webhooks import parse_event_id
from shared.services import webhooks

router = APIRouter(prefix="/webhook-endpoints", tags=["webhooks"], route_class=ExactJSONRoute)


async def _event_id(
    event_id: Annotated[str, Path(description="`evt_` + 32 hex digits.", examples=[EVENT_ID])],
) -> uuid.UUID:
    try:
        return parse_event_id(event_id)
    except InvalidInput as error:
        raise InvalidInput(error.message, field="path.event_id") from error


EventId = Annotated[uuid.UUID, Depends(_event_id)]


@router.post(
    "",
    response_model=Envelope[WebhookEndpointCreatedRead],
    responses=error_responses(403, 413, 422, 503),
    summary="Create a webhook endpoint; its secret is in this answer only",
    description="An admin key's endpoint receives the events of every merchant; a merchant "
    "write key's, those of transfers its merchant sends or receives. Each final state of a "
    "transfer (every kind) is POSTed to it, signed per Standard Webhooks with the secret.",
)
async def create_endpoint(
    body: WebhookEndpointCreate, request: Request, db: DB, actor: Caller
) -> JSONResponse:
    allow_private = request.app.state.settings.webhook_allow_private
    created = await webhooks.create_endpoint(
        db, actor, body.to_domain(), allow_private=allow_private
    )
    read = WebhookEndpointRead.model_validate(created.endpoint)
    return envelope(WebhookEndpointCreatedRead.model_construct(**dict(read), secret=created.secret))


@router.get(
    "",
    response_model=Envelope[list[WebhookEndpointRead]],
    responses=error_responses(503),
    summary="Webhook endpoints, oldest first (a merchant key: its own), without secrets",
)
async def list_endpoints(db: DB, actor: Caller) -> JSONResponse:
    endpoints = await webhooks.list_endpoints(db, actor)
    return envelope([WebhookEndpointRead.model_validate(endpoint) for endpoint in endpoints])


@router.delete(
    "/{endpoint_id}",
    response_model=Envelope[WebhookEndpointRead],
    responses=error_responses(403, 404, 422, 503),
    summary="Delete a webhook endpoint: nothing more is sent to it",
)
async def delete_endpoint(endpoint_id: uuid.UUID, db: DB, actor: Caller) -> JSONResponse:
    endpoint = await webhooks.delete_endpoint(db, actor, endpoint_id)
    return envelope(WebhookEndpointRead.model_validate(endpoint))


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=PageEnvelope[WebhookAttemptRead],
    responses=error_responses(404, 422, 503),
    summary="An endpoint's delivery attempts, newest first, paginated",
)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    db: DB,
    actor: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JSONResponse:
    page = await webhooks.list_attempts(db, actor, endpoint_id, cursor, limit)
    result = [WebhookAttemptRead.model_validate(attempt) for attempt in page.attempts]
    return envelope(result, next_cursor=page.next_cursor)


@router.post(
    "/{endpoint_id}/deliveries/{event_id}/retry",
    status_code=202,
    response_model=Envelope[WebhookDeliveryRead],
    responses=error_responses(403, 404, 422, 503),
    summary="Send an event to the endpoint again, now",
    description="Delivered, given up or waiting for its next attempt alike: it is due now "
    "(one more attempt; if it fails, the schedule goes on where it was). A delivery being "
    "sent at this moment is left to that attempt.",
)
async def retry_delivery(
    endpoint_id: uuid.UUID, event_id: EventId, db: DB, actor: Caller
) -> JSONResponse:
    delivery = await webhooks.retry_delivery(db, actor, endpoint_id, event_id)
    return envelope(WebhookDeliveryRead.model_validate(delivery), status=202)
