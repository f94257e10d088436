"""Webhooks: endpoints and the deliveries log (async, the API); the outbox's fan-out, claims
and attempts (sync, the workers).

The events themselves are written by the database (migration 0009's trigger on `transfers`), in
the transaction that makes each transfer final; nothing here inserts one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.columns import to_transfer
from shared.db.tables import merchants, webhook_endpoints
from shared.domain.webhooks import (
    AttemptRecord,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    DueDelivery,
    EventToDispatch,
    EventType,
    WebhookEndpoint,
)

_ENDPOINT_COLUMNS = (
    webhook_endpoints.c.id,
    webhook_endpoints.c.merchant_id,
    merchants.c.name.label("merchant_name"),
    webhook_endpoints.c.url,
    webhook_endpoints.c.events,
    webhook_endpoints.c.description,
    webhook_endpoints.c.created,
    webhook_endpoints.c.deleted,
)
_WITH_MERCHANT = webhook_endpoints.outerjoin(
    merchants, merchants.c.id == webhook_endpoints.c.merchant_id
)

# Deleting an endpoint stops its deliveries in the same statement: nothing pending is left to
# send to it (an attempt in flight finds its delivery cancelled and records only its log line).
_DELETE_ENDPOINT = text(
    """
    WITH stopped AS (
        UPDATE webhook_deliveries SET state = :cancelled, next_attempt = NULL, lease = NULL
        WHERE endpoint_id = :id AND state = :pending
    )
    UPDATE webhook_endpoints SET deleted = clock_timestamp()
    WHERE id = :id AND deleted IS NULL
    """
)

_LIST_ATTEMPTS = text(
    """
    SELECT a.id, a.event_id, e.type, a.attempted, a.status_code, a.error, a.next_attempt,
           a.delivered
    FROM webhook_attempts a
    JOIN webhook_events e ON e.id = a.event_id
    WHERE a.endpoint_id = :endpoint_id
      AND (CAST(:after_attempted AS timestamptz) IS NULL
           OR (a.attempted, a.id) < (CAST(:after_attempted AS timestamptz), :after_id))
    ORDER BY a.attempted DESC, a.id DESC
    LIMIT :limit
    """
)

_DELIVERY = """
    RETURNING endpoint_id, event_id, state, attempts, next_attempt, delivered,
              (SELECT type FROM webhook_events WHERE id = event_id) AS type
"""

# Due now, unless a worker is sending it at this moment (its lease not run out): that attempt
# is the one asked for.
_RETRY_DELIVERY = text(
    """
    UPDATE webhook_deliveries
    SET state = :pending, next_attempt = clock_timestamp(), lease = NULL
    WHERE endpoint_id = :endpoint_id AND event_id = :event_id AND state <> :cancelled
      AND NOT (state = :pending AND lease IS NOT NULL AND next_attempt > clock_timestamp())
    """
    + _DELIVERY
)

_GET_DELIVERY = text(
    """
    SELECT d.endpoint_id, d.event_id, d.state, d.attempts, d.next_attempt, d.delivered, e.type
    FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
    WHERE d.endpoint_id = :endpoint_id AND d.event_id = :event_id
    """
)

# What `/metrics` shows: deliveries waiting, and the age of the oldest event not delivered yet
# (waiting for its fan-out, or for a delivery). Two partial indexes; no table scan.
_UNDELIVERED_SUMMARY = text(
    """
    SELECT
        (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending') AS undelivered,
        EXTRACT(EPOCH FROM clock_timestamp() - LEAST(
            (SELECT min(event_created) FROM webhook_deliveries WHERE state = 'pending'),
            (SELECT min(created) FROM webhook_events WHERE dispatched IS NULL)
        )) AS oldest_age_s
    """
)

# Events not fanned out yet, oldest first, each with its transfer and the endpoints that want
# it now: live, subscribed to its type, created before it (or within a minute after), and the
# platform's or a party's.
# SKIP LOCKED: several workers fan out at once, each its own events.
_TAKE_UNDISPATCHED = text(
    """
    SELECT e.id AS event_id, e.type, e.created AS event_created,
           t.id, t.kind, t.from_merchant_id, t.to_merchant_id, t.amount, t.fee, t.percent_fee,
           t.currency, t.idempotency_key, t.state, t.failure_reason, t.created, t.processed,
           t.reverses, t.reversed_amount, t.reversed_fee, t.to_currency, t.fx_rate,
           t.converted_amount,
           ARRAY(
               SELECT w.id FROM webhook_endpoints w
               WHERE w.deleted IS NULL AND e.type = ANY(w.events)
                 -- A minute's grace: an endpoint created (its transaction's start, the
                 -- database's clock) just after an event (the worker's clock) still gets it.
                 AND w.created <= e.created + interval '1 minute'
                 AND (w.merchant_id IS NULL
                      OR w.merchant_id = t.from_merchant_id OR w.merchant_id = t.to_merchant_id)
               ORDER BY w.id
           ) AS endpoint_ids
    FROM (
        SELECT id, transfer_id, type, created FROM webhook_events
        WHERE dispatched IS NULL
        ORDER BY created
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) e
    JOIN transfers t ON t.id = e.transfer_id
    """
)

# The fan-out of a batch of events in one statement: their deliveries, due now, and each
# event's body (NULL when no endpoint wanted it) and dispatch time.
_WRITE_DISPATCH = text(
    """
    WITH deliveries AS (
        INSERT INTO webhook_deliveries (endpoint_id, event_id, event_created, next_attempt)
        SELECT endpoint_id, event_id, event_created, clock_timestamp()
        FROM unnest(CAST(:endpoint_ids AS uuid[]), CAST(:event_ids AS uuid[]),
                    CAST(:event_created AS timestamptz[]))
            AS wanted (endpoint_id, event_id, event_created)
        ON CONFLICT DO NOTHING
    )
    UPDATE webhook_events SET dispatched = clock_timestamp(), body = rendered.body
    FROM unnest(CAST(:ids AS uuid[]), CAST(:bodies AS text[])) AS rendered (id, body)
    WHERE webhook_events.id = rendered.id
    """
)

# Claim due deliveries: lock them (SKIP LOCKED: another worker's claim is its own), mark them
# ours with the lease and push `next_attempt` past the send's timeout, so that a worker that
# dies mid-send leaves them due again then, and no other worker sends them meanwhile. A due
# delivery to a deleted endpoint (fanned out while the endpoint was being deleted) is cancelled
# instead: nothing is sent to an endpoint after its deletion.
_CLAIM_DUE = text(
    """
    WITH due AS (
        SELECT d.endpoint_id, d.event_id, w.deleted IS NOT NULL AS gone
        FROM webhook_deliveries d
        JOIN webhook_endpoints w ON w.id = d.endpoint_id
        WHERE d.state = 'pending' AND d.next_attempt <= clock_timestamp()
        ORDER BY d.next_attempt
        LIMIT :limit
        FOR UPDATE OF d SKIP LOCKED
    ), cancelled AS (
        UPDATE webhook_deliveries d SET state = 'cancelled', next_attempt = NULL, lease = NULL
        FROM due
        WHERE due.gone AND d.endpoint_id = due.endpoint_id AND d.event_id = due.event_id
    ), claimed AS (
        UPDATE webhook_deliveries d
        SET lease = :lease, attempts = d.attempts + 1,
            next_attempt = clock_timestamp() + make_interval(secs => :lease_s)
        FROM due
        WHERE NOT due.gone AND d.endpoint_id = due.endpoint_id AND d.event_id = due.event_id
        RETURNING d.endpoint_id, d.event_id, d.attempts
    )
    SELECT c.endpoint_id, c.event_id, c.attempts, w.url, w.signing_key, e.body
    FROM claimed c
    JOIN webhook_endpoints w ON w.id = c.endpoint_id
    JOIN webhook_events e ON e.id = c.event_id
    """
)

# A round's attempts: their log lines, and each delivery's new state, if the claim is still
# ours (a delivery cancelled or retried by hand meanwhile keeps what that did to it).
_RECORD_ATTEMPTS = text(
    """
    WITH logged AS (
        INSERT INTO webhook_attempts
            (endpoint_id, event_id, attempted, status_code, error, delivered, next_attempt)
        SELECT * FROM unnest(
            CAST(:endpoint_ids AS uuid[]), CAST(:event_ids AS uuid[]),
            CAST(:attempted AS timestamptz[]), CAST(:status_codes AS integer[]),
            CAST(:errors AS varchar[]), CAST(:delivered AS boolean[]),
            CAST(:next_attempts AS timestamptz[]))
    )
    UPDATE webhook_deliveries d
    SET state = outcome.state, next_attempt = outcome.next_attempt, lease = NULL,
        delivered = CASE WHEN outcome.state = 'delivered' THEN outcome.attempted
                         ELSE d.delivered END
    FROM unnest(CAST(:endpoint_ids AS uuid[]), CAST(:event_ids AS uuid[]),
                CAST(:states AS varchar[]), CAST(:next_attempts AS timestamptz[]),
                CAST(:attempted AS timestamptz[]), CAST(:leases AS uuid[]))
        AS outcome (endpoint_id, event_id, state, next_attempt, attempted, lease)
    WHERE d.endpoint_id = outcome.endpoint_id AND d.event_id = outcome.event_id
      AND d.lease = outcome.lease AND d.state = 'pending'
    """
)


def _endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        merchant_id=row.merchant_id,
        merchant_name=row.merchant_name,
        url=row.url,
        events=tuple(EventType(kind) for kind in row.events),
        description=row.description,
        created=row.created,
        deleted=row.deleted,
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        type=EventType(row.type),
        state=DeliveryState(row.state),
        attempts=row.attempts,
        next_attempt=row.next_attempt,
        delivered=row.delivered,
    )


class WebhookRepository:
    """The API's side: endpoints, the deliveries log, a manual retry, the metrics summary."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def insert_endpoint(
        self,
        merchant_id: uuid.UUID | None,
        url: str,
        events: list[str],
        description: str | None,
        signing_key: bytes,
    ) -> uuid.UUID:
        endpoint_id = uuid.uuid4()
        await self._connection.execute(
            webhook_endpoints.insert().values(
                id=endpoint_id,
                merchant_id=merchant_id,
                url=url,
                events=events,
                description=description,
                signing_key=signing_key,
            )
        )
        return endpoint_id

    async def get_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        statement = (
            select(*_ENDPOINT_COLUMNS)
            .select_from(_WITH_MERCHANT)
            .where(webhook_endpoints.c.id == endpoint_id)
        )
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else _endpoint(row)

    async def list_endpoints(self, merchant_id: uuid.UUID | None) -> list[WebhookEndpoint]:
        """Live endpoints, oldest first: every one (None), or one merchant's."""
        statement = (
            select(*_ENDPOINT_COLUMNS)
            .select_from(_WITH_MERCHANT)
            .where(webhook_endpoints.c.deleted.is_(None))
            .order_by(webhook_endpoints.c.created, webhook_endpoints.c.id)
        )
        if merchant_id is not None:
            statement = statement.where(webhook_endpoints.c.merchant_id == merchant_id)
        return [_endpoint(row) for row in await self._connection.execute(statement)]

    async def delete_endpoint(self, endpoint_id: uuid.UUID) -> None:
        await self._connection.execute(
            _DELETE_ENDPOINT,
            {
                "id": endpoint_id,
                "pending": DeliveryState.PENDING,
                "cancelled": DeliveryState.CANCELLED,
            },
        )

    async def list_attempts(
        self, endpoint_id: uuid.UUID, after: tuple[datetime, int] | None, limit: int
    ) -> list[DeliveryAttempt]:
        rows = await self._connection.execute(
            _LIST_ATTEMPTS,
            {
                "endpoint_id": endpoint_id,
                "after_attempted": None if after is None else after[0],
                "after_id": None if after is None else after[1],
                "limit": limit,
            },
        )
        return [
            DeliveryAttempt(
                id=row.id,
                event_id=row.event_id,
                type=EventType(row.type),
                attempted=row.attempted,
                status_code=row.status_code,
                error=row.error,
                next_attempt=row.next_attempt,
                delivered=row.delivered,
            )
            for row in rows
        ]

    async def retry_delivery(self, endpoint_id: uuid.UUID, event_id: uuid.UUID) -> Delivery | None:
        """Make the delivery due now (unless it is being sent now); None if there is none."""
        keys = {"endpoint_id": endpoint_id, "event_id": event_id}
        states = {"pending": DeliveryState.PENDING, "cancelled": DeliveryState.CANCELLED}
        row = (await self._connection.execute(_RETRY_DELIVERY, keys | states)).one_or_none()
        if row is None:
            row = (await self._connection.execute(_GET_DELIVERY, keys)).one_or_none()
        return None if row is None else _delivery(row)

    async def undelivered_summary(self) -> tuple[int, float | None]:
        """(deliveries waiting, age in seconds of the oldest event not delivered yet)."""
        row = (await self._connection.execute(_UNDELIVERED_SUMMARY)).one()
        age = None if row.oldest_age_s is None else float(row.oldest_age_s)
        return int(row.undelivered), age


class OutboxRepository:
    """The workers' side: fan events out to endpoints, claim due deliveries, record attempts."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def take_undispatched(self, limit: int) -> list[EventToDispatch]:
        rows = self._connection.execute(_TAKE_UNDISPATCHED, {"limit": limit})
        return [
            EventToDispatch(
                id=row.event_id,
                type=EventType(row.type),
                created=row.event_created,
                transfer=to_transfer(row),
                endpoint_ids=list(row.endpoint_ids),
            )
            for row in rows
        ]

    def write_dispatch(self, events: list[EventToDispatch], bodies: list[str | None]) -> None:
        """Mark the events fanned out, with their bodies, and create their deliveries."""
        if not events:
            return
        wanted = [(endpoint, event) for event in events for endpoint in event.endpoint_ids]
        self._connection.execute(
            _WRITE_DISPATCH,
            {
                "endpoint_ids": [endpoint for endpoint, _ in wanted],
                "event_ids": [event.id for _, event in wanted],
                "event_created": [event.created for _, event in wanted],
                "ids": [event.id for event in events],
                "bodies": bodies,
            },
        )

    def claim_due(self, limit: int, lease: uuid.UUID, lease_s: float) -> list[DueDelivery]:
        rows = self._connection.execute(
            _CLAIM_DUE, {"limit": limit, "lease": lease, "lease_s": lease_s}
        )
        return [
            DueDelivery(
                endpoint_id=row.endpoint_id,
                event_id=row.event_id,
                lease=lease,
                attempts=row.attempts,
                url=row.url,
                signing_key=bytes(row.signing_key),
                body=row.body,
            )
            for row in rows
        ]

    def record_attempts(self, records: list[AttemptRecord]) -> None:
        if not records:
            return
        self._connection.execute(
            _RECORD_ATTEMPTS,
            {
                "leases": [r.delivery.lease for r in records],
                "endpoint_ids": [r.delivery.endpoint_id for r in records],
                "event_ids": [r.delivery.event_id for r in records],
                "attempted": [r.attempted for r in records],
                "status_codes": [r.outcome.status_code for r in records],
                "errors": [r.outcome.error for r in records],
                "delivered": [r.outcome.delivered for r in records],
                "next_attempts": [r.next_attempt for r in records],
                "states": [r.state.value for r in records],
            },
        )

    def try_runner_lock(self, lock_id: int) -> bool:
        """A session-level advisory lock: freed when released, or when the session ends (a
        worker that dies frees it at once)."""
        return bool(
            self._connection.execute(
                text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}
            ).scalar_one()
        )

    def release_runner_lock(self, lock_id: int) -> None:
        self._connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
