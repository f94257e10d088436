"""Delivering webhooks (the workers' use case): fan the outbox's events out to endpoints, then
send what is due, signed, and record every attempt.

The outbox rows in PostgreSQL are the truth. Each run works in rounds, in short transactions:
1. fan-out: take events not dispatched yet (SKIP LOCKED), render each one's body once — the
   transfer as `GET /v1/transfers/{id}` renders it, as it was when it became final — and create
   one delivery per endpoint that wants it, due now;
2. claim: take up to `concurrency` due deliveries (SKIP LOCKED), each with the run's lease and a
   `next_attempt` past the send's timeout, and commit: no other worker sends them meanwhile,
   and if this one dies they are due again when the lease runs out (at least once, never lost);
3. send them all at once (each cut off after `DELIVERY_TIMEOUT_S`), then record every attempt
   and each delivery's next state in one statement: delivered, due again after the next delay
   of the schedule, or given up.
One run at a time across all workers (a session-level advisory lock, freed at once if the
worker dies), for at most `RUN_BUDGET_S`: the task never holds a worker's process for long, and
the periodic task starts the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from sqlalchemy import Connection

from shared.db.webhooks import OutboxRepository
from shared.domain.webhooks import (
    DELIVERY_TIMEOUT_S,
    AttemptRecord,
    DueDelivery,
    EventToDispatch,
    format_event_id,
    record_attempt,
    signed_headers,
)
from shared.infra.database import SyncDatabase
from shared.infra.webhook_http import Post, Sender
from shared.infra.wire import format_timestamp, render_transfer

log = structlog.get_logger(__name__)

# "mlwh": the advisory lock of the one delivery run.
RUNNER_LOCK_ID = 0x6D6C7768
# Past the send's own timeout, with room for recording the attempt.
LEASE_S = DELIVERY_TIMEOUT_S + 20.0
DISPATCH_BATCH = 500
RUN_BUDGET_S = 20.0


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    concurrency: int
    allow_private: bool
    retry_schedule: tuple[float, ...]
    budget_s: float = RUN_BUDGET_S


@dataclass(slots=True)
class DeliveryRun:
    ran: bool  # False: another worker is delivering right now
    dispatched: int = 0
    attempts: list[AttemptRecord] = field(default_factory=list)


def render_event(event: EventToDispatch) -> str:
    """The body every endpoint and every retry of this event gets, byte for byte."""
    return json.dumps(
        {
            "id": format_event_id(event.id),
            "type": event.type.value,
            "created": format_timestamp(event.created),
            "data": render_transfer(event.data()),
        },
        separators=(",", ":"),
    )


def deliver_webhooks(
    db: SyncDatabase,
    options: DeliveryOptions,
    on_round: Callable[[list[AttemptRecord]], None] = lambda _: None,
) -> DeliveryRun:
    """One delivery run, unless another worker's is under way (then nothing)."""
    with db.engine.connect() as connection:
        outbox = OutboxRepository(connection)
        with connection.begin():
            if not outbox.try_runner_lock(RUNNER_LOCK_ID):
                return DeliveryRun(ran=False)
        try:
            return asyncio.run(_run(connection, outbox, options, on_round))
        finally:
            _release(connection, outbox)


def _release(connection: Connection, outbox: OutboxRepository) -> None:
    """Unlock; a session that cannot be unlocked is closed instead (its lock dies with it), never
    handed back to the pool still holding it."""
    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            outbox.release_runner_lock(RUNNER_LOCK_ID)
    except Exception:
        with contextlib.suppress(Exception):
            connection.invalidate()
        raise


async def _run(
    connection: Connection,
    outbox: OutboxRepository,
    options: DeliveryOptions,
    on_round: Callable[[list[AttemptRecord]], None],
) -> DeliveryRun:
    run = DeliveryRun(ran=True)
    sender = Sender(options.concurrency, options.allow_private)
    deadline = time.monotonic() + options.budget_s
    try:
        while True:
            with connection.begin():
                dispatched = _dispatch(outbox)
            lease = uuid.uuid4()
            with connection.begin():
                due = outbox.claim_due(options.concurrency, lease, LEASE_S)
            records = await _send(sender, due, options.retry_schedule) if due else []
            if records:
                with connection.begin():
                    outbox.record_attempts(records, lease)
                on_round(records)
            run.dispatched += dispatched
            run.attempts += records
            if (not due and dispatched < DISPATCH_BATCH) or time.monotonic() > deadline:
                return run
    finally:
        await sender.aclose()


def _dispatch(outbox: OutboxRepository) -> int:
    """Fan a batch of events out; an event no endpoint wants is marked dispatched, bodiless."""
    events = outbox.take_undispatched(DISPATCH_BATCH)
    bodies = [render_event(event) if event.endpoint_ids else None for event in events]
    outbox.write_dispatch(events, bodies)
    return len(events)


async def _send(
    sender: Sender, due: list[DueDelivery], schedule: tuple[float, ...]
) -> list[AttemptRecord]:
    """One attempt of each claimed delivery: a fresh timestamp and signature, the same body."""
    attempted = datetime.now(UTC)
    timestamp = int(attempted.timestamp())
    posts = []
    for delivery in due:
        body = delivery.body.encode()
        headers = signed_headers(delivery.signing_key, delivery.webhook_id, timestamp, body)
        posts.append(Post(delivery.url, headers, body))
    outcomes = await sender.send_all(posts)
    return [
        record_attempt(delivery, attempted, outcome, schedule)
        for delivery, outcome in zip(due, outcomes, strict=True)
    ]
