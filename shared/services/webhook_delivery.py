"""Delivering webhooks (the workers' use case): fan the outbox's events out to endpoints, then
send what is due, signed, and record every attempt.

The outbox rows in PostgreSQL are the truth. Each run works in rounds, in short transactions:
1. fan-out: take events not dispatched yet (SKIP LOCKED), render each one's body once — the
   transfer as `GET /v1/transfers/{id}` renders it, as it was when it became final — and create
   one delivery per endpoint that wants it, due now;
2. claim: take as many due deliveries as there are free slots (SKIP LOCKED), each with a lease
   and a `next_attempt` past the send's timeout, and commit: no other worker sends them
   meanwhile, and if this one dies they are due again when the lease runs out (at least once,
   never lost);
3. send them (at most `concurrency` in flight, each cut off after `DELIVERY_TIMEOUT_S`), and
   record finished attempts in batches, one statement each: the log lines and each delivery's
   next state — delivered, due again after the next delay of the schedule, or given up.
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
    """A pipeline: claim as soon as a quarter of the slots is free, record as attempts finish
    (every half-slot's worth, or when nothing is in flight), so sending never waits for the
    database and the database is not asked once per request."""
    run = DeliveryRun(ran=True)
    # Made when the first delivery is due: a run with nothing to send opens no HTTP client.
    sender: Sender | None = None
    deadline = time.monotonic() + options.budget_s
    in_flight: set[asyncio.Task[AttemptRecord]] = set()
    finished: list[AttemptRecord] = []
    claim_at = max(1, options.concurrency // 4)
    flush_at = max(1, options.concurrency // 2)
    idle = False
    try:
        while True:
            free = options.concurrency - len(in_flight)
            if not idle and free >= claim_at and time.monotonic() < deadline:
                with connection.begin():
                    run.dispatched += (dispatched := _dispatch(outbox))
                with connection.begin():
                    due = outbox.claim_due(free, uuid.uuid4(), LEASE_S)
                if due:
                    sender = sender or Sender(options.concurrency, options.allow_private)
                    in_flight |= {asyncio.create_task(_attempt(sender, d, options)) for d in due}
                # Nothing due and nothing left to fan out: claim again only once this ends.
                idle = not due and dispatched < DISPATCH_BATCH
            if in_flight:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                finished += [task.result() for task in done]
            if finished and (len(finished) >= flush_at or not in_flight):
                with connection.begin():
                    outbox.record_attempts(finished)
                on_round(finished)
                run.attempts += finished
                finished = []
            if not in_flight and (idle or time.monotonic() >= deadline):
                return run
    finally:
        for task in in_flight:
            task.cancel()
        if sender is not None:
            await sender.aclose()


def _dispatch(outbox: OutboxRepository) -> int:
    """Fan a batch of events out; an event no endpoint wants is marked dispatched, bodiless."""
    events = outbox.take_undispatched(DISPATCH_BATCH)
    bodies = [render_event(event) if event.endpoint_ids else None for event in events]
    outbox.write_dispatch(events, bodies)
    return len(events)


async def _attempt(
    sender: Sender, delivery: DueDelivery, options: DeliveryOptions
) -> AttemptRecord:
    """One attempt: a fresh timestamp and signature, the same body."""
    attempted = datetime.now(UTC)
    body = delivery.body.encode()
    timestamp = int(attempted.timestamp())
    headers = signed_headers(delivery.signing_key, delivery.webhook_id, timestamp, body)
    outcome = await sender.send(Post(delivery.url, headers, body))
    return record_attempt(delivery, attempted, outcome, options.retry_schedule)
