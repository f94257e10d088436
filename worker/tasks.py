"""Celery tasks: thin wrappers that parse, call one use case, and record the outcome."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import structlog
from celery import Task
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from shared.domain.webhooks import AttemptRecord
from shared.infra.notifications import announce_final
from shared.infra.queue import (
    APPLY_GROUP_TASK,
    APPLY_TRANSFER_TASK,
    AUDIT_TASK,
    DELIVER_WEBHOOKS_TASK,
    SWEEP_PENDING_TASK,
    TRANSFERS_QUEUE,
    celery_app,
    publish_transfer_groups,
)
from shared.infra.retry import Backoff
from shared.services import audit, posting, webhook_delivery
from shared.services.operations import add_counts, webhook_increments
from worker import metrics as worker_metrics
from worker.resources import resources

log = structlog.get_logger(__name__)

# A task that could not do its work now (busy balance locks, a database that went away: the
# transaction rolled back) is retried with the worker's one backoff; after the last retry its
# transfers simply stay pending and the sweep hands them out again. Never a failure.
TASK_RETRY = Backoff(first_s=0.05, cap_s=5.0)
MAX_TASK_RETRIES = 16
SWEEP_LIMIT = 1000


class TransferFailed(Exception):
    """The transfer a message named ended `failed` (insufficient funds, or given up after its
    applying kept raising). Raised only after the outcome is committed and announced, so Celery
    marks the task FAILURE — red in Flower — while the transfer itself is final: the message is
    acknowledged (`task_acks_on_failure_or_timeout`), never retried (no `autoretry_for`, and
    `throws` lists it as expected, so the worker logs no traceback either).
    """


def _retry_later(task: Task[Any, Any], reason: str) -> None:
    if task.request.retries < MAX_TASK_RETRIES:
        raise task.retry(countdown=TASK_RETRY.delay_s(task.request.retries))
    log.warning("giving up for now, the sweep will hand the transfers out again", reason=reason)


@celery_app.task(
    name=APPLY_TRANSFER_TASK, bind=True, max_retries=MAX_TASK_RETRIES, throws=(TransferFailed,)
)
def apply_transfer(
    self: Task[Any, Any],
    transfer_ids: list[str] | str,
    request_id: str | None = None,
    balances: list[list[str]] | None = None,
    request_ids: list[str | None] | None = None,
) -> dict[str, Any]:
    """Apply the transfers an API process just submitted (one, or the group it recorded
    together) behind their balances' locks, or drain a backlog with them. One submission's
    `request_id` is bound to the log context by a signal; a group's `request_ids` (one per
    transfer) go on each transfer's line. The result (shown in Flower) says what became of
    them; if one ended failed, the task fails with `TransferFailed` (after the commit), counts
    in its text. A single id (a message queued before groups existed) is a group of one."""
    listed = [transfer_ids] if isinstance(transfer_ids, str) else transfer_ids
    ids = [uuid.UUID(i) for i in listed]
    structlog.contextvars.bind_contextvars(transfer_id=", ".join(map(str, ids)))
    worker = resources()
    try:
        result = posting.apply_queued_transfers(
            worker.db,
            worker.locker,
            ids,
            None if balances is None else [(uuid.UUID(m), currency) for m, currency in balances],
            queue_depth=_queue_depth(worker.redis),
            lock_ttl_s=worker.settings.lock_ttl_s,
            lock_wait_s=worker.settings.lock_wait_s,
        )
    except DBAPIError as error:
        _retry_later(self, f"database: {type(error.orig).__name__}")
        return {"left_to_the_sweep": True}
    if result.locks_busy:
        worker_metrics.count_lock_retry()
        _retry_later(self, "balance locks stayed busy")
    submitted_by = dict(zip(ids, request_ids or [request_id] * len(ids), strict=True))
    for transfer in result.settled:
        if transfer.id in submitted_by:
            log.info(
                f"transfer {transfer.state.value}",
                transfer_id=str(transfer.id),
                request_id=submitted_by[transfer.id],
            )
    summary = _record(result)
    if failed := set(result.failed).intersection(ids):
        counts = ", ".join(f"{name}={value}" for name, value in summary.items())
        raise TransferFailed(f"transfer {', '.join(map(str, failed))} failed ({counts})")
    return summary


@celery_app.task(name=APPLY_GROUP_TASK, bind=True, max_retries=MAX_TASK_RETRIES)
def apply_transfer_group(
    self: Task[Any, Any],
    transfer_ids: list[str],
    batch_id: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Apply a group of pending transfers in one transaction (bulk submissions, the sweep).

    The result (shown in Flower) says how the group went, with its batch id.
    """
    structlog.contextvars.bind_contextvars(batch_id=batch_id)
    try:
        result = posting.apply_group(resources().db, [uuid.UUID(i) for i in transfer_ids])
    except DBAPIError as error:
        _retry_later(self, f"database: {type(error.orig).__name__}")
        return {"batch_id": batch_id, "left_to_the_sweep": True}
    return {"batch_id": batch_id, **_record(result)}


def _record(result: posting.GroupResult) -> dict[str, Any]:
    """Tell waiting API processes, log one line, and summarise for Flower."""
    announce_final(resources().redis, result.final)
    worker_metrics.record_group(
        resources().redis,
        size=len(result.final) + result.skipped + len(result.faulted),
        settled=result.settled,
    )
    summary = {
        "completed": len(result.completed),
        "failed": len(result.failed),
        "skipped": result.skipped,
        "faulted": len(result.faulted),
    }
    if len(result.final) + len(result.faulted) > 1:
        log.info("transfers applied", **summary)
    return summary


def _queue_depth(redis: Redis) -> int:
    try:
        return int(redis.llen(TRANSFERS_QUEUE))
    except RedisError:
        return 0


# `send_events=False`: a sweep that finds nothing (nearly every one, every SWEEP_INTERVAL_S)
# sends no task events, so it stays out of Flower's task history. One that finds work reports
# itself (below), and the groups it publishes are ordinary tasks that show anyway.
@celery_app.task(name=SWEEP_PENDING_TASK, bind=True, send_events=False)
def sweep_pending(self: Task[Any, Any]) -> int:
    """Enqueue again every transfer left pending too long (a lost message, a lost enqueue)."""
    started = time.monotonic()
    worker = resources()
    stale = posting.claim_stale_pending(
        worker.db, worker.settings.stale_pending_after_s, SWEEP_LIMIT
    )
    if stale:
        log.info("re-enqueueing stale pending transfers", count=len(stale))
        publish_transfer_groups(stale, None, None)
        _report_to_flower(self, len(stale), time.monotonic() - started)
    return len(stale)


@celery_app.task(name=AUDIT_TASK)
def audit_ledger() -> dict[str, Any]:
    """Check every invariant (beat, every AUDIT_INTERVAL_S) and record the outcome, which
    `/metrics` (`mini_ledger_audit_ok`) and the console show."""
    worker = resources()
    report = audit.audit_ledger(worker.db, worker.redis)
    if report.ok:
        log.info("audit clean", transfers=report.transfers, entries=report.entries)
    else:
        log.error("audit found problems", problems=report.problems)
    return {"ok": report.ok, "problems": len(report.problems)}


# Quiet when idle like the sweep (beat sends one every WEBHOOK_POLL_INTERVAL_S): a run that
# sent something reports itself to Flower.
@celery_app.task(name=DELIVER_WEBHOOKS_TASK, bind=True, send_events=False)
def deliver_webhooks(self: Task[Any, Any]) -> dict[str, Any]:
    """Fan the outbox's new events out to endpoints and send every due delivery (one run at a
    time across the workers: another one finding a run under way returns at once)."""
    started = time.monotonic()
    worker = resources()
    settings = worker.settings
    options = webhook_delivery.DeliveryOptions(
        concurrency=settings.webhook_concurrency,
        allow_private=settings.webhook_allow_private,
        retry_schedule=settings.webhook_retry_schedule,
    )
    try:
        run = webhook_delivery.deliver_webhooks(worker.db, options, _count_webhook_attempts)
    except DBAPIError as error:
        # Claimed deliveries are due again when their lease runs out; nothing is lost.
        log.warning("webhook delivery interrupted", error=type(error.orig).__name__)
        return {"interrupted": True}
    outcomes = Counter(record.metric_outcome for record in run.attempts)
    summary = {"ran": run.ran, "dispatched": run.dispatched, **outcomes}
    if run.attempts:
        log.info("webhooks sent", dispatched=run.dispatched, **outcomes)
        _report_to_flower(self, len(run.attempts), time.monotonic() - started)
    return summary


def _count_webhook_attempts(records: list[AttemptRecord]) -> None:
    try:
        add_counts(resources().redis, webhook_increments(records))
    except RedisError as error:
        log.warning("metrics: webhook attempts not counted", error=str(error))


def _report_to_flower(task: Task[Any, Any], found: int, runtime_s: float) -> None:
    """The events the worker would have sent for this task, sent by hand: Flower lists it."""
    try:
        task.send_event("task-received", name=task.name, args="()", kwargs="{}", retries=0)
        task.send_event("task-started")
        task.send_event("task-succeeded", result=repr(found), runtime=runtime_s)
    except Exception as error:  # kombu and redis raise many types; monitoring is best effort.
        log.warning("could not report a task to Flower", error=str(error))
