"""Celery tasks: thin wrappers that parse, call one use case, and record the outcome."""

from __future__ import annotations

import random
import uuid
from typing import Any

import structlog
from celery import Task
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from shared.notifications import announce_final
from shared.queue import (
    APPLY_GROUP_TASK,
    APPLY_TRANSFER_TASK,
    GROUP_SIZE,
    SWEEP_PENDING_TASK,
    TRANSFERS_QUEUE,
    celery_app,
    publish_transfer_groups,
)
from shared.services import posting
from shared.services.posting import ApplyOutcome
from worker.resources import resources

log = structlog.get_logger(__name__)

# Busy balance locks are retried with capped exponential backoff; after the last retry the
# transfer simply stays pending and the sweep hands it out again. Never a failure.
MAX_LOCK_RETRIES = 16
RETRY_BASE_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 5.0
MAX_DB_RETRIES = 8
SWEEP_BATCH = 1000
# Messages waiting in the queue from which a worker applies transfers in groups.
DRAIN_BACKLOG = 50


def retry_delay_s(retries: int) -> float:
    """Capped exponential backoff with full jitter, so contenders spread out."""
    return random.uniform(0, min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2**retries))


# A database error (connection lost, lock or statement timeout) rolled the work back: retry.
RETRY_ON_DATABASE_ERRORS: dict[str, Any] = {
    "autoretry_for": (DBAPIError,),
    "retry_backoff": True,
    "retry_backoff_max": int(RETRY_MAX_DELAY_S),
    "retry_jitter": True,
}


@celery_app.task(
    name=APPLY_TRANSFER_TASK, bind=True, max_retries=MAX_LOCK_RETRIES, **RETRY_ON_DATABASE_ERRORS
)
def apply_transfer(
    self: Task[Any, Any],
    transfer_id: str,
    request_id: str | None = None,
    balances: list[list[str]] | None = None,
) -> str:
    """Apply one pending transfer; `request_id` is bound to the log context by a signal.

    With a backlog in the queue, the transfer is applied in a group with the oldest pending
    ones instead (see `posting.drain_pending`): the backlog drains many times faster.
    """
    structlog.contextvars.bind_contextvars(transfer_id=transfer_id)
    worker = resources()
    if _queue_depth(worker.redis) >= DRAIN_BACKLOG:
        drained = posting.drain_pending(worker.db, uuid.UUID(transfer_id), GROUP_SIZE)
        announce_final(worker.redis, drained.final)
        _log_group("backlog drained", drained)
        return "drained"
    outcome = posting.apply_transfer(
        worker.db,
        worker.locker,
        uuid.UUID(transfer_id),
        None if balances is None else [(uuid.UUID(m), currency) for m, currency in balances],
        lock_ttl_s=worker.settings.lock_ttl_s,
        lock_wait_s=worker.settings.lock_wait_s,
    )
    if outcome in (ApplyOutcome.COMPLETED, ApplyOutcome.FAILED):
        announce_final(worker.redis, [uuid.UUID(transfer_id)])
    elif outcome is ApplyOutcome.LOCKS_BUSY:
        if self.request.retries < MAX_LOCK_RETRIES:
            raise self.retry(countdown=retry_delay_s(self.request.retries))
        log.warning("balance locks stayed busy, leaving the transfer to the sweep")
    return outcome.value


def _log_group(event: str, result: posting.GroupResult) -> None:
    log.info(
        event,
        completed=len(result.completed),
        failed=len(result.failed),
        skipped=result.skipped,
        faulted=len(result.faulted),
    )


def _queue_depth(redis: Redis) -> int:
    try:
        return int(redis.llen(TRANSFERS_QUEUE))
    except RedisError:
        return 0


@celery_app.task(name=APPLY_GROUP_TASK, max_retries=MAX_DB_RETRIES, **RETRY_ON_DATABASE_ERRORS)
def apply_transfer_group(
    transfer_ids: list[str], batch_id: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """Apply a group of pending transfers in one transaction (bulk submissions, the sweep).

    The result (shown in Flower) says how the group went, with its batch id.
    """
    structlog.contextvars.bind_contextvars(batch_id=batch_id)
    worker = resources()
    result = posting.apply_group(worker.db, [uuid.UUID(i) for i in transfer_ids])
    announce_final(worker.redis, result.final)
    _log_group("transfer group applied", result)
    return {
        "batch_id": batch_id,
        "completed": len(result.completed),
        "failed": len(result.failed),
        "skipped": result.skipped,
        "faulted": len(result.faulted),
    }


@celery_app.task(name=SWEEP_PENDING_TASK)
def sweep_pending() -> int:
    """Enqueue again every transfer left pending too long (a lost message, a lost enqueue)."""
    worker = resources()
    stale = posting.claim_stale_pending(
        worker.db, worker.settings.stale_pending_after_s, SWEEP_BATCH
    )
    if stale:
        log.info("re-enqueueing stale pending transfers", count=len(stale))
        publish_transfer_groups(stale, None, None)
    return len(stale)
