"""What an operator watches: the queue, the pending transfers, and the ledger-wide counters.

Two kinds of numbers feed `/metrics`:
- gauges read at scrape time (`ledger_gauges`): pending transfers and the age of the oldest
  (one query on the partial index of pending transfers), webhook deliveries waiting and the age of
  the oldest undelivered event (partial indexes too), and the queue depth (one `LLEN`). They
  are cached for `GAUGES_CACHE_S` in Redis, shared by every API process on every machine, and
  in the process as well: a scrape a second on each of many processes costs the database at
  most about one query a second.
- ledger-wide counters (`LEDGER_COUNTERS_KEY`, one Redis hash): transfers submitted, transfers
  made final by kind and state, failures by reason and the settle-time histogram, webhook
  attempts by outcome and their failures by reason. The API
  processes add what they accepted, the workers what they decided; every API process reads the
  same totals, so every scrape shows the whole ledger, however many API and worker processes
  on however many machines share it. The database stays the truth: a Redis that is down or
  flushed loses counts (Prometheus sees a counter reset), never money.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from redis.exceptions import RedisError

from shared.db.transfers import TransferRepository
from shared.db.webhooks import WebhookRepository
from shared.domain.access import Actor
from shared.domain.errors import DependencyUnavailable
from shared.domain.transfers import INSUFFICIENT_FUNDS
from shared.domain.webhooks import AttemptRecord
from shared.infra.database import Database
from shared.infra.queue import TRANSFERS_QUEUE

log = structlog.get_logger(__name__)

LEDGER_COUNTERS_KEY = "mini-ledger:metrics:ledger"
GAUGES_CACHE_KEY = "mini-ledger:metrics:gauges"
AUDIT_KEY = "mini-ledger:metrics:audit"
GAUGES_CACHE_S = 1.0
# A scrape must answer even when a dependency hangs: these bound what it waits for.
GAUGES_QUERY_TIMEOUT_S = 2.0
REDIS_TIMEOUT_S = 0.5
# Submit to final: milliseconds when the queue is idle, minutes under a backlog or an outage.
SETTLE_BUCKETS_S: tuple[float, ...] = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
# `failure_reason` texts become a label of a few values, never free text: bounded cardinality.
FAILURE_REASONS: tuple[tuple[str, str], ...] = (
    (INSUFFICIENT_FUNDS, "insufficient_funds"),
    ("Amount exceeds the reversible remainder", "reversible_remainder_exceeded"),
    ("Internal error", "internal_error"),
)
OTHER_REASON = "other"
# SPEC's kinds of movement and final states: every one has its series from the start.
KINDS = ("transfer", "deposit", "withdrawal", "reversal")
FINAL_STATES = ("completed", "failed")
SETTLE_SUM_PREFIX = "settle_sum:"
# What became of webhook attempts, and why the failed ones failed: every value has its series.
WEBHOOK_OUTCOMES = ("delivered", "retrying", "given_up")
WEBHOOK_FAILURE_REASONS = ("http_status", "timeout", "connection", "private_address")


@dataclass(frozen=True, slots=True)
class QueueStatus:
    queue_depth: int | None  # messages waiting in the broker; None if Redis did not answer
    pending_transfers: int
    oldest_pending_age_s: float | None


async def queue_status(db: Database, actor: Actor, redis: AsyncRedis) -> QueueStatus:
    actor.require_admin()
    async with db.autocommit() as connection:
        pending, oldest_age_s = await TransferRepository(connection).pending_summary()
    try:
        depth: int | None = int(await redis.llen(TRANSFERS_QUEUE))
    except (RedisError, OSError):
        depth = None
    return QueueStatus(depth, pending, oldest_age_s)


# ---------------------------------------------------------------------------------------------
# Gauges, read at scrape time


@dataclass(frozen=True, slots=True)
class LedgerGauges:
    """None where the dependency did not answer (the scrape still answers)."""

    pending_transfers: int | None
    oldest_pending_age_s: float | None  # None also when nothing is pending
    queue_depth: int | None
    database_up: bool
    redis_up: bool
    webhooks_undelivered: int | None = None
    webhooks_oldest_undelivered_age_s: float | None = None  # None also when none waits


@dataclass(frozen=True, slots=True)
class AuditStatus:
    ok: bool
    problems: int
    checked_at: float  # Unix time


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    gauges: LedgerGauges
    counts: dict[str, float] | None  # LEDGER_COUNTERS_KEY's fields; None if Redis did not answer
    audit: AuditStatus | None


# (pending transfers, oldest pending age, webhook deliveries waiting, oldest undelivered age)
Summary = tuple[int, float | None, int | None, float | None]


class GaugeCache:
    """The last summary this process read from the database, for `GAUGES_CACHE_S`:
    what keeps the scrapes off the database when Redis, which shares the summary between
    processes, does not answer."""

    def __init__(self) -> None:
        self._value: tuple[float, Summary] | None = None

    def get(self) -> Summary | None:
        if self._value is None or time.monotonic() - self._value[0] > GAUGES_CACHE_S:
            return None
        return self._value[1]

    def put(self, summary: Summary) -> None:
        self._value = (time.monotonic(), summary)


async def ledger_snapshot(db: Database, redis: AsyncRedis, cache: GaugeCache) -> LedgerSnapshot:
    """Everything `/metrics` shows of the ledger: one Redis round trip, and at most one indexed
    query a second across every API process."""
    shared_gauges: bytes | None = None
    depth: int | None = None
    counts: dict[str, float] | None = None
    audit: AuditStatus | None = None
    redis_up = True
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.get(GAUGES_CACHE_KEY)
                pipe.llen(TRANSFERS_QUEUE)
                pipe.hgetall(LEDGER_COUNTERS_KEY)
                pipe.hgetall(AUDIT_KEY)
                shared_gauges, raw_depth, raw_counts, raw_audit = await pipe.execute()
        depth = int(raw_depth)
        counts = {_text(field): float(value) for field, value in raw_counts.items()}
        audit = _audit_status(raw_audit)
    except (RedisError, OSError, TimeoutError, ValueError) as error:
        log.warning("metrics: Redis did not answer", error=str(error))
        redis_up = False
    summary = _shared_summary(shared_gauges) or cache.get()
    database_up = True
    if summary is None:
        try:
            async with asyncio.timeout(GAUGES_QUERY_TIMEOUT_S):
                async with db.autocommit() as connection:
                    transfers = await TransferRepository(connection).pending_summary()
                    webhooks = await WebhookRepository(connection).undelivered_summary()
                summary = (*transfers, *webhooks)
        except (DependencyUnavailable, TimeoutError) as error:
            log.warning("metrics: the database did not answer", error=str(error))
            database_up = False
        else:
            cache.put(summary)
            if redis_up:
                await _share_summary(redis, summary)
    if summary is None:
        gauges = LedgerGauges(None, None, depth, database_up, redis_up)
    else:
        gauges = LedgerGauges(summary[0], summary[1], depth, database_up, redis_up, *summary[2:])
    return LedgerSnapshot(gauges, counts, audit)


def _shared_summary(raw: bytes | None) -> Summary | None:
    if raw is None:
        return None
    values = json.loads(raw)
    if len(values) != 4:  # An older process's: read the database this once.
        return None
    pending, oldest_age_s, undelivered, oldest_undelivered_s = values
    return (
        int(pending),
        None if oldest_age_s is None else float(oldest_age_s),
        None if undelivered is None else int(undelivered),
        None if oldest_undelivered_s is None else float(oldest_undelivered_s),
    )


async def _share_summary(redis: AsyncRedis, summary: Summary) -> None:
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await redis.set(GAUGES_CACHE_KEY, json.dumps(summary), px=int(GAUGES_CACHE_S * 1000))
    except (RedisError, OSError, TimeoutError) as error:
        log.warning("metrics: could not share the pending summary", error=str(error))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _audit_status(raw: Mapping[bytes, bytes]) -> AuditStatus | None:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    if not fields:
        return None
    return AuditStatus(
        ok=fields["ok"] == "1", problems=int(fields["problems"]), checked_at=float(fields["at"])
    )


# ---------------------------------------------------------------------------------------------
# Ledger-wide counters: field names of LEDGER_COUNTERS_KEY


def submitted_field(kind: str) -> str:
    return f"submitted:{kind}"


def final_field(kind: str, state: str) -> str:
    return f"final:{kind}:{state}"


def failed_field(kind: str, reason: str) -> str:
    return f"failed:{kind}:{reason}"


def settle_bucket_field(kind: str, index: int) -> str:
    """Observations of the bucket `index` alone (`SETTLE_BUCKETS_S[index]`, or +Inf past the
    last bound): the reader sums them into Prometheus's cumulative buckets."""
    return f"settle:{kind}:{index}"


def settle_sum_field(kind: str) -> str:
    return f"{SETTLE_SUM_PREFIX}{kind}"


def webhook_field(outcome: str) -> str:
    return f"webhooks:{outcome}"


def webhook_failure_field(reason: str) -> str:
    return f"webhook_failures:{reason}"


def webhook_increments(records: Iterable[AttemptRecord]) -> dict[str, float]:
    """The counter increments for a round of webhook attempts: by outcome, failures by reason."""
    increments: Counter[str] = Counter()
    for record in records:
        increments[webhook_field(record.metric_outcome)] += 1
        if (reason := record.outcome.failure_reason) is not None:
            increments[webhook_failure_field(reason)] += 1
    return {field: float(count) for field, count in increments.items()}


def failure_label(reason: str | None) -> str:
    for prefix, label in FAILURE_REASONS:
        if reason is not None and reason.startswith(prefix):
            return label
    return OTHER_REASON


def settle_bucket(settle_s: float) -> int:
    for index, bound in enumerate(SETTLE_BUCKETS_S):
        if settle_s <= bound:
            return index
    return len(SETTLE_BUCKETS_S)


class FinalTransfer(Protocol):
    """What the counters need of a transfer a worker just made final (a domain `Transfer`)."""

    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def failure_reason(self) -> str | None: ...
    @property
    def created(self) -> datetime: ...
    @property
    def processed(self) -> datetime | None: ...


def settled_increments(transfers: Iterable[FinalTransfer]) -> dict[str, float]:
    """The counter increments for transfers made final: by kind and state, failures by reason,
    and the settle time (`processed - created`) into the histogram."""
    increments: defaultdict[str, float] = defaultdict(float)
    now = datetime.now(UTC)
    for transfer in transfers:
        kind, state = str(transfer.kind), str(transfer.state)
        increments[final_field(kind, state)] += 1
        if state == "failed":
            increments[failed_field(kind, failure_label(transfer.failure_reason))] += 1
        settle_s = max(0.0, ((transfer.processed or now) - transfer.created).total_seconds())
        increments[settle_bucket_field(kind, settle_bucket(settle_s))] += 1
        increments[settle_sum_field(kind)] += settle_s
    return dict(increments)


def add_counts(redis: Redis, increments: Mapping[str, float]) -> None:
    """Add to the ledger-wide counters in one round trip (sync: the worker). Raises RedisError."""
    if not increments:
        return
    with redis.pipeline(transaction=False) as pipe:
        for field, amount in increments.items():
            _add(pipe, field, amount)
        pipe.execute()


async def add_counts_async(redis: AsyncRedis, increments: Mapping[str, float]) -> None:
    """The same for the API. Raises RedisError (or TimeoutError past `REDIS_TIMEOUT_S`)."""
    if not increments:
        return
    async with asyncio.timeout(REDIS_TIMEOUT_S):
        async with redis.pipeline(transaction=False) as pipe:
            for field, amount in increments.items():
                _add(pipe, field, amount)
            await pipe.execute()


def _add(pipe: Pipeline | AsyncPipeline, field: str, amount: float) -> None:
    """Sums are floats (HINCRBYFLOAT), every other field an integer count (HINCRBY): a field
    keeps one type for ever."""
    if field.startswith(SETTLE_SUM_PREFIX):
        pipe.hincrbyfloat(LEDGER_COUNTERS_KEY, field, float(amount))
    else:
        pipe.hincrby(LEDGER_COUNTERS_KEY, field, int(amount))


class SubmissionCounts:
    """Transfers this process accepted, by kind, not yet added to Redis.

    `count_submitted` is all a submission pays (no Redis round trip on the request's path); the
    API flushes the counts about once a second and at shutdown, and keeps them while Redis does
    not answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # Services may count from worker threads.
        self._counts: Counter[str] = Counter()

    def add(self, kind: str, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self._counts[submitted_field(str(kind))] += count

    async def flush(self, redis: AsyncRedis) -> None:
        with self._lock:
            taken, self._counts = self._counts, Counter()
        try:
            await add_counts_async(redis, taken)
        except (RedisError, OSError, TimeoutError) as error:
            with self._lock:
                self._counts.update(taken)
            log.warning("metrics: submission counts kept for later", error=str(error))


submission_counts = SubmissionCounts()


def count_submitted(kind: str, count: int = 1) -> None:
    """Count transfers of `kind` newly recorded as pending (never a replay, never a refusal)."""
    submission_counts.add(kind, count)


# ---------------------------------------------------------------------------------------------
# The last audit, for the alert on a broken invariant


def _audit_fields(
    ok: bool, problems: int, checked_at: datetime, report: Mapping[str, Any] | None
) -> dict[Any, str]:
    fields: dict[Any, str] = {
        "ok": "1" if ok else "0",
        "problems": str(problems),
        "at": str(checked_at.timestamp()),
    }
    if report is not None:
        fields["report"] = json.dumps(report)
    return fields


def record_audit(
    redis: Redis,
    ok: bool,
    problems: int,
    checked_at: datetime,
    report: Mapping[str, Any] | None = None,
) -> None:
    """Remember the outcome of an audit (`mini-ledger audit`, beat's periodic audit): `/metrics`
    shows it as `mini_ledger_audit_ok`, the console the whole `report`. Best effort: a Redis
    that does not answer is logged."""
    try:
        redis.hset(AUDIT_KEY, mapping=_audit_fields(ok, problems, checked_at, report))
    except RedisError as error:
        log.warning("metrics: audit outcome not recorded", error=str(error))


async def record_audit_async(
    redis: AsyncRedis,
    ok: bool,
    problems: int,
    checked_at: datetime,
    report: Mapping[str, Any] | None = None,
) -> None:
    """The same from the API (`GET /v1/audit`, the console)."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await redis.hset(AUDIT_KEY, mapping=_audit_fields(ok, problems, checked_at, report))
    except (RedisError, OSError, TimeoutError) as error:
        log.warning("metrics: audit outcome not recorded", error=str(error))


async def last_audit_report(redis: AsyncRedis) -> dict[str, Any] | None:
    """The last audit's report as `GET /v1/audit` answers it; None if none was recorded (or
    Redis does not answer)."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            raw = await redis.hget(AUDIT_KEY, "report")
    except (RedisError, OSError, TimeoutError):
        return None
    try:
        stored = None if raw is None else json.loads(raw)
    except ValueError:
        return None
    return stored if isinstance(stored, dict) else None
