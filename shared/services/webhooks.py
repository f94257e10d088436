"""Webhook endpoints (create with the secret shown once, list, delete), an endpoint's deliveries
log, and a manual retry. Scoped by the key's owner like every other resource: an admin's
endpoints receive every merchant's events, a merchant's those of transfers it is party to; a
merchant key sees its own endpoints only, anything else is "does not exist". Delivery itself is
the workers' (`shared.services.webhook_delivery`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.db.webhooks import WebhookRepository
from shared.domain.access import Actor
from shared.domain.errors import InvalidCursor, InvariantViolation
from shared.domain.webhooks import (
    AttemptsPage,
    CreatedWebhookEndpoint,
    Delivery,
    EndpointRequest,
    WebhookDeliveryNotFound,
    WebhookEndpoint,
    WebhookEndpointNotFound,
    format_event_id,
    format_secret,
    new_signing_key,
    refuse_private,
)
from shared.infra.database import Database
from shared.infra.queue import publish_webhook_delivery
from shared.infra.webhook_http import resolve
from shared.services.pagination import decode_text, encode_text


async def create_endpoint(
    db: Database, actor: Actor, request: EndpointRequest, *, allow_private: bool
) -> CreatedWebhookEndpoint:
    """A new endpoint for the key's owner (an admin key: the platform's); its secret is
    returned once. Unless `allow_private`, a URL whose host is (or resolves to) a loopback or
    private address is refused."""
    actor.require_write()
    if not allow_private:
        refuse_private(await resolve(request.url))
    signing_key = new_signing_key()
    async with db.transaction() as connection:
        repository = WebhookRepository(connection)
        endpoint_id = await repository.insert_endpoint(
            actor.merchant_id,
            request.url.url,
            [kind.value for kind in request.events],
            request.description,
            signing_key,
        )
        endpoint = await repository.get_endpoint(endpoint_id)
    if endpoint is None:  # Read back in the transaction that wrote it.
        raise InvariantViolation(f"webhook endpoint {endpoint_id} vanished")
    return CreatedWebhookEndpoint(endpoint, format_secret(signing_key))


async def list_endpoints(db: Database, actor: Actor) -> list[WebhookEndpoint]:
    """Live endpoints: every one for an admin, the merchant's own for a merchant key."""
    async with db.autocommit() as connection:
        return await WebhookRepository(connection).list_endpoints(actor.merchant_id)


async def get_endpoint(db: Database, actor: Actor, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    async with db.autocommit() as connection:
        endpoint = await WebhookRepository(connection).get_endpoint(endpoint_id)
    return _visible(endpoint, actor, endpoint_id)


async def delete_endpoint(db: Database, actor: Actor, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Delete a live endpoint: nothing more is sent to it (its pending deliveries are
    cancelled); its log stays for the console."""
    actor.require_write()
    async with db.transaction() as connection:
        repository = WebhookRepository(connection)
        _visible(await repository.get_endpoint(endpoint_id), actor, endpoint_id)
        await repository.delete_endpoint(endpoint_id)
        endpoint = await repository.get_endpoint(endpoint_id)
    if endpoint is None:
        raise InvariantViolation(f"webhook endpoint {endpoint_id} vanished")
    return endpoint


async def list_attempts(
    db: Database, actor: Actor, endpoint_id: uuid.UUID, cursor: str | None, limit: int
) -> AttemptsPage:
    """An endpoint's delivery attempts, newest first, a page at a time."""
    after = None if cursor is None else _decode_cursor(cursor)
    async with db.autocommit() as connection:
        repository = WebhookRepository(connection)
        _visible(await repository.get_endpoint(endpoint_id), actor, endpoint_id)
        attempts = await repository.list_attempts(endpoint_id, after, limit + 1)
    next_cursor = None
    if len(attempts) > limit:
        attempts = attempts[:limit]
        last = attempts[-1]
        next_cursor = encode_text(f"{last.attempted.isoformat()}|{last.id}")
    return AttemptsPage(attempts, next_cursor)


async def retry_delivery(
    db: Database, actor: Actor, endpoint_id: uuid.UUID, event_id: uuid.UUID
) -> Delivery:
    """Send one event to one endpoint again, now (delivered, given up or waiting for its next
    attempt alike); a delivery being sent at this moment is left to that attempt. After the
    commit a worker is asked to run at once; the database stays the truth (the periodic task
    finds the delivery due anyway)."""
    actor.require_write()
    async with db.transaction() as connection:
        repository = WebhookRepository(connection)
        _visible(await repository.get_endpoint(endpoint_id), actor, endpoint_id)
        delivery = await repository.retry_delivery(endpoint_id, event_id)
    if delivery is None:
        raise WebhookDeliveryNotFound(format_event_id(event_id))
    publish_webhook_delivery()
    return delivery


def _visible(
    endpoint: WebhookEndpoint | None, actor: Actor, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    """A live endpoint the key may see; anything else does not exist for it."""
    if endpoint is None or endpoint.deleted is not None or not endpoint.visible_to(actor):
        raise WebhookEndpointNotFound(str(endpoint_id))
    return endpoint


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        attempted, attempt_id = decode_text(cursor).split("|")
        moment = datetime.fromisoformat(attempted)
        if moment.tzinfo is None:
            raise ValueError("naive cursor timestamp")
        return moment, int(attempt_id)
    except ValueError as error:
        raise InvalidCursor() from error
