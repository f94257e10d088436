"""The console's webhooks: every endpoint, one endpoint's delivery attempts (newest first), and
sending one event to it again. The API's own services, with the operator's `Actor`."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.base import ConsoleRoute, Editor, Viewer, redirect, render
from api.console.format import BASE_PATH
from shared.domain.errors import InvalidInput, LedgerError
from shared.domain.webhooks import WebhookEndpointNotFound, format_event_id, parse_event_id
from shared.services import webhooks

router = APIRouter(prefix=BASE_PATH, route_class=ConsoleRoute)

ATTEMPTS_PAGE = 50


def _endpoint_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise WebhookEndpointNotFound(value) from None


def _endpoint_path(endpoint_id: uuid.UUID | str) -> str:
    return f"{BASE_PATH}/webhooks/{endpoint_id}"


@router.get("/webhooks")
async def endpoints(request: Request, operator: Viewer) -> Response:
    found = await webhooks.list_endpoints(operator.db, operator.actor)
    return render(request, "webhooks.html", operator=operator, nav="webhooks", endpoints=found)


@router.get("/webhooks/{endpoint_id}")
async def endpoint(
    request: Request, operator: Viewer, endpoint_id: str, cursor: str | None = None
) -> Response:
    found = await webhooks.get_endpoint(operator.db, operator.actor, _endpoint_id(endpoint_id))
    page = await webhooks.list_attempts(
        operator.db, operator.actor, found.id, cursor or None, ATTEMPTS_PAGE
    )
    return render(
        request,
        "webhook.html",
        operator=operator,
        nav="webhooks",
        endpoint=found,
        page=page,
        event_id=format_event_id,
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{event_id}/retry")
async def retry(endpoint_id: str, event_id: str, action: Editor) -> Response:
    operator = action.operator
    try:
        delivery = await webhooks.retry_delivery(
            operator.db, operator.actor, _endpoint_id(endpoint_id), parse_event_id(event_id)
        )
    except InvalidInput:
        operator.refused(f"Delivery of event {event_id} does not exist")
        return redirect(_endpoint_path(endpoint_id))
    except LedgerError as error:
        operator.refused(error.message)
        return redirect(_endpoint_path(endpoint_id) if _is_uuid(endpoint_id) else BASE_PATH)
    operator.ok(
        f"Event {format_event_id(delivery.event_id)} will be sent again now "
        f"(attempt {delivery.attempts + 1})."
    )
    return redirect(_endpoint_path(endpoint_id))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
