"""The transfer queue: the Celery app both sides share, its settings, and publishing.

Configured for money, not for demos (README, "Delivery"): a message is acknowledged only after
its task returns (a worker lost mid-task means redelivery), prefetch is one, there is no result
backend (the database holds every outcome), and anything lost on the way is found again by the
periodic sweep of pending transfers.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import structlog
from celery import Celery
from redis.asyncio import Redis as AsyncRedis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.domain.transfers import Transfer
from shared.infra.config import Settings, get_settings

log = structlog.get_logger(__name__)

APPLY_TRANSFER_TASK = "mini_ledger.apply_transfer"
APPLY_GROUP_TASK = "mini_ledger.apply_transfer_group"
SWEEP_PENDING_TASK = "mini_ledger.sweep_pending"
AUDIT_TASK = "mini_ledger.audit"
DELIVER_WEBHOOKS_TASK = "mini_ledger.deliver_webhooks"
TRANSFERS_QUEUE = "transfers"
MAINTENANCE_QUEUE = "maintenance"
# Webhook deliveries wait on receivers: a queue of their own, so a slow receiver never holds a
# message of the transfers queue back. Every worker consumes all three (`WORKER_QUEUES`).
WEBHOOKS_QUEUE = "webhooks"
WORKER_QUEUES = (TRANSFERS_QUEUE, MAINTENANCE_QUEUE, WEBHOOKS_QUEUE)
# Unacknowledged messages are handed out again after this; longer than any task may run.
VISIBILITY_TIMEOUT_S = 600
# Transfers a worker applies in one database transaction (bulk submissions and the sweep).
GROUP_SIZE = 1000
TASK_TIME_LIMIT_S = 120
# Short, so a submission never waits long on a broker that is down: the transfer is recorded
# already and the sweep enqueues it later. Still well above Redis's answer time and above the
# 1 s blocking read of an idle worker's consumer.
BROKER_CONNECT_TIMEOUT_S = 0.5
BROKER_SOCKET_TIMEOUT_S = 2
# After a failed publish, publishing is skipped for this long (one trial per period after).
BROKER_DOWN_PAUSE_S = 2.0


def create_celery(settings: Settings) -> Celery:
    app = Celery("mini_ledger", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_time_limit=TASK_TIME_LIMIT_S,
        task_default_queue=TRANSFERS_QUEUE,
        task_routes={
            APPLY_TRANSFER_TASK: {"queue": TRANSFERS_QUEUE},
            APPLY_GROUP_TASK: {"queue": TRANSFERS_QUEUE},
            SWEEP_PENDING_TASK: {"queue": MAINTENANCE_QUEUE},
            AUDIT_TASK: {"queue": MAINTENANCE_QUEUE},
            DELIVER_WEBHOOKS_TASK: {"queue": WEBHOOKS_QUEUE},
        },
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
        },
        broker_connection_retry_on_startup=True,
        # One immediate retry: it reconnects a pooled connection that a restarted Redis broke;
        # a broker that is down fails both tries at once.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0},
        # Flower shows tasks from the workers' events; a "sent" event from the API as well would
        # cost every submission one more Redis publish.
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule={
            "sweep-pending-transfers": {
                "task": SWEEP_PENDING_TASK,
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s},
            },
            # The alert `AuditNotRun` expects one at least daily; `AuditFailed` pages on a bad one.
            "audit-ledger": {
                "task": AUDIT_TASK,
                "schedule": settings.audit_interval_s,
                "options": {"expires": settings.audit_interval_s},
            },
            # The outbox in PostgreSQL is the truth: this finds every due delivery, whatever
            # became of any message (a kick after a manual retry only makes it sooner).
            "deliver-webhooks": {
                "task": DELIVER_WEBHOOKS_TASK,
                "schedule": settings.webhook_poll_interval_s,
                "options": {"expires": settings.webhook_poll_interval_s},
            },
        },
    )
    return app


celery_app = create_celery(get_settings())


class BrokerBreaker:
    """A circuit breaker for publishing: after a failure, skip the broker for `pause_s`, then
    let one publish through to try it. Without it, every submission during a Redis outage
    would pay a failed connection (and a log line) before answering.
    """

    def __init__(self, pause_s: float) -> None:
        self._pause_s = pause_s
        self._lock = threading.Lock()  # Publishes run in the API's worker threads.
        self._down_since: float | None = None
        self._next_try = 0.0

    def allows(self) -> bool:
        with self._lock:
            if self._down_since is None:
                return True
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + self._pause_s  # This caller is the trial; others wait.
            return True

    def failed(self, error: Exception) -> None:
        with self._lock:
            now = time.monotonic()
            self._next_try = now + self._pause_s
            if self._down_since is not None:
                return
            self._down_since = now
        log.warning(
            "broker unreachable, the sweep will enqueue pending transfers",
            error=str(error),
            retry_in_s=self._pause_s,
        )

    def succeeded(self) -> None:
        with self._lock:
            down_since, self._down_since = self._down_since, None
        if down_since is not None:
            log.info("broker reachable again", down_s=round(time.monotonic() - down_since, 1))


broker_breaker = BrokerBreaker(BROKER_DOWN_PAUSE_S)


# (task name, args, kwargs, and how Flower shows them: given, so Celery skips its slow saferepr)
Message = tuple[str, list[Any], dict[str, Any], str, str]


def transfers_message(submitted: list[tuple[Transfer, str | None]]) -> Message:
    """One message for transfers just submitted, each with the id of the request that submitted
    it (one submission, or the group an API process recorded together), applied as one group
    behind the balance locks. It names the balances to lock, so the worker need not read the
    transfers before taking the locks. One submission's request id is the task's (its log
    context); a group's ride along in `request_ids`, one per transfer, for the worker's lines."""
    transfers = [transfer for transfer, _ in submitted]
    balances = dict.fromkeys(key for transfer in transfers for key in transfer.balances)
    ids = [str(transfer.id) for transfer in transfers]
    request_ids = [request_id for _, request_id in submitted]
    return (
        APPLY_TRANSFER_TASK,
        [ids],
        {
            **({"request_id": request_ids[0]} if len(ids) == 1 else {"request_ids": request_ids}),
            # A cross-currency receiver's balance is in `to_currency`.
            "balances": [[str(merchant), currency] for merchant, currency in balances],
        },
        ", ".join(ids),  # Flower finds a transfer's task by its id
        "",
    )


class TransferPublisher:
    """How the API hands transfers just recorded to the workers: from the event loop, one
    LPUSH of the very message Celery's own publish sends to the transfers queue (task protocol
    2, JSON body, Redis transport), with no thread hop and none of kombu's per-message
    machinery, which cost a submission group more than its database work did.
    `tests/shared/test_queue.py` holds it to what Celery sends.

    Called after the commit that recorded them as pending, behind the breaker, never raising:
    the database is the source of truth, so a failed publish delays a transfer (the sweep
    enqueues it again), it never loses one.
    """

    def __init__(self, redis_url: str, queue: str = TRANSFERS_QUEUE) -> None:
        """`redis_url`: the broker's server and database, as redis-py names them."""
        self._queue = queue
        self._redis = AsyncRedis.from_url(
            redis_url,
            socket_timeout=BROKER_SOCKET_TIMEOUT_S,
            socket_connect_timeout=BROKER_CONNECT_TIMEOUT_S,
            # As Celery's publish: one immediate retry reconnects a pooled connection that a
            # restarted Redis broke; a broker that is down fails both tries at once.
            retry=Retry(NoBackoff(), 1),
        )
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"

    async def publish_transfers(self, submitted: list[tuple[Transfer, str | None]]) -> None:
        """`submitted`: each transfer with the id of the request that submitted it."""
        if not broker_breaker.allows():
            return
        message = encode_task(transfers_message(submitted), self._origin, self._queue)
        try:
            await self._redis.lpush(self._queue, message)
        except Exception as error:  # redis-py raises many types; all mean "not queued".
            broker_breaker.failed(error)
            return
        broker_breaker.succeeded()

    async def aclose(self) -> None:
        await self._redis.aclose()


def encode_task(message: Message, origin: str, queue: str) -> bytes:
    """A task message as Celery (protocol 2) and kombu's Redis transport put it on `queue`."""
    name, args, kwargs, argsrepr, kwargsrepr = message
    task_id = str(uuid.uuid4())
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([args, kwargs, embed]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": name,
                "id": task_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": argsrepr,
                "kwargsrepr": kwargsrepr,
                "origin": origin,
                "ignore_result": None,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "argsrepr": argsrepr,
                "kwargsrepr": kwargsrepr,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                # The transport's key for the message while a worker holds it unacknowledged.
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def publish_transfer_groups(
    transfer_ids: list[uuid.UUID], batch_id: uuid.UUID | None, request_id: str | None
) -> None:
    """Hand transfers to the workers in groups of GROUP_SIZE, each applied in one transaction.

    `batch_id` rides along so Flower shows which batch a group belongs to.
    """
    _publish(
        (
            APPLY_GROUP_TASK,
            [[str(transfer_id) for transfer_id in group]],
            {"batch_id": None if batch_id is None else str(batch_id), "request_id": request_id},
            f"{len(group)} transfers",
            f"batch_id={batch_id}",
        )
        for group in (
            transfer_ids[start : start + GROUP_SIZE]
            for start in range(0, len(transfer_ids), GROUP_SIZE)
        )
    )


def publish_webhook_delivery() -> None:
    """Ask a worker to deliver due webhooks now (after a manual retry); lost, it costs only
    the wait for beat's next one."""
    _publish([(DELIVER_WEBHOOKS_TASK, [], {}, "()", "{}")])


def _publish(messages: Iterable[Message]) -> None:
    """Send the messages on one producer; if the broker refuses, the sweep enqueues them later."""
    if not broker_breaker.allows():
        return
    try:
        with celery_app.producer_or_acquire() as producer:
            for name, args, kwargs, argsrepr, kwargsrepr in messages:
                celery_app.send_task(
                    name,
                    args=args,
                    kwargs=kwargs,
                    producer=producer,
                    argsrepr=argsrepr,
                    kwargsrepr=kwargsrepr,
                )
    except Exception as error:  # kombu and redis raise many types; all mean "not queued".
        broker_breaker.failed(error)
        return
    broker_breaker.succeeded()
