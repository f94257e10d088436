"""Prometheus metrics of the API, served at `/metrics` (`api/routers/operations.py`).

- HTTP metrics (`mini_ledger_http_requests_total{method,route,status}`,
  `mini_ledger_http_request_duration_seconds{method,route}`) are recorded by
  prometheus-fastapi-instrumentator's middleware, labelled by the route's template
  (`/v1/transfers/{transfer_id}`, and `/transfers/{transfer_id}` for the alias), never a raw path:
  a path no route matches is `unmatched`.
- One view across the processes of one API server: `mini-ledger api` gives its uvicorn processes
  one fresh `PROMETHEUS_MULTIPROC_DIR` (`cli/main.py`), each process writes its values there,
  and whichever process serves the scrape sums them all (prometheus_client's multiprocess mode).
  API servers on other machines are other Prometheus targets: sum them in queries.
- Ledger-wide metrics (transfers submitted and final, settle times, pending, queue depth, the
  last audit, webhook attempts and what waits undelivered) come from
  `shared.services.operations`: the same numbers on every API process of every machine (take
  `max`, never `sum`, across targets).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from redis.asyncio import Redis

from shared.services.operations import (
    FAILURE_REASONS,
    FINAL_STATES,
    KINDS,
    OTHER_REASON,
    SETTLE_BUCKETS_S,
    WEBHOOK_FAILURE_REASONS,
    WEBHOOK_OUTCOMES,
    GaugeCache,
    LedgerSnapshot,
    failed_field,
    final_field,
    settle_bucket_field,
    settle_sum_field,
    submission_counts,
    submitted_field,
    webhook_failure_field,
    webhook_field,
)
from shared.services.recording import MAX_GROUP

# prometheus_client chooses its storage when it is imported: files in this directory shared by
# the server's processes, or memory. The exposition follows the same choice.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# Up to `Prefer: wait=30`.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED_ROUTE = "unmatched"
# The classic text format: what `generate_latest` writes, and what every Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Submissions counted in this process reach Redis (and every API's /metrics) within about this.
FLUSH_INTERVAL_S = 1.0
FLUSH_AT_SHUTDOWN_TIMEOUT_S = 1.0

# No `*_created` series: they double the text and no query here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]
HTTP_REQUESTS = Counter(
    "mini_ledger_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "mini_ledger_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=HTTP_BUCKETS_S,
)
# Submissions per commit of this process (`shared/services/recording.py`): 1 when quiet, more
# under load; sum / count is the mean.
RECORDED_GROUP_SIZE = Histogram(
    "mini_ledger_submissions_per_commit",
    "Submissions this API process recorded by one statement (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, MAX_GROUP),
)


def _route_label(handler: str) -> str:
    """The instrumentator's route template, or `unmatched`.

    It names a request no route matches `none`, and one that only a trailing-slash redirect
    would match by its raw path (`/v1/transfers/<id>/`): both are `unmatched`, so no id, name or
    made-up path ever becomes a label value (bounded cardinality).
    """
    if handler == "none" or (handler != "/" and handler.endswith("/")):
        return UNMATCHED_ROUTE
    return handler


def _observe(info: Info) -> None:
    route = _route_label(info.modified_handler)
    HTTP_REQUESTS.labels(info.method, route, info.modified_status).inc()
    HTTP_DURATION.labels(info.method, route).observe(info.modified_duration)


def instrument(app: FastAPI) -> None:
    """Count and time every request but the scrapes themselves; the state `/metrics` keeps."""
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        should_group_untemplated=True,
        excluded_handlers=["^/metrics$"],
    )
    instrumentator.add(_observe)
    instrumentator.instrument(app)
    app.state.gauge_cache = GaugeCache()


# ---------------------------------------------------------------------------------------------
# Submission counts: buffered in the process, flushed to Redis


class SubmissionFlusher:
    """Adds this process's submission counts to the ledger-wide ones about once a second."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_AT_SHUTDOWN_TIMEOUT_S):
                await submission_counts.flush(self._redis)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await submission_counts.flush(self._redis)


# ---------------------------------------------------------------------------------------------
# Exposition


def exposition(snapshot: LedgerSnapshot) -> bytes:
    """The Prometheus text format: this server's processes' metrics, then the ledger's."""
    if MULTIPROCESS:
        processes = CollectorRegistry()
        MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
        own = generate_latest(processes)
    else:
        own = generate_latest(REGISTRY)
    ledger = CollectorRegistry(auto_describe=False)
    ledger.register(LedgerCollector(snapshot))
    return own + generate_latest(ledger)


class LedgerCollector(Collector):
    """One scrape's view of the ledger-wide numbers. Every known kind, state and failure reason
    has a series from the start (0 until it happens), so rates and alerts see no gaps."""

    def __init__(self, snapshot: LedgerSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        counts = self._snapshot.counts
        if counts is not None:  # Redis answered; a count made up as 0 would read as a reset.
            yield from self._counters(counts)
        yield from self._gauges()

    def _counters(self, counts: dict[str, float]) -> Iterator[Metric]:
        reasons = [label for _, label in FAILURE_REASONS] + [OTHER_REASON]
        submitted = CounterMetricFamily(
            "mini_ledger_transfers_submitted",
            "Transfers recorded as pending, by kind (ledger-wide: the same on every API process)",
            labels=["kind"],
        )
        final = CounterMetricFamily(
            "mini_ledger_transfers_final",
            "Transfers that reached a final state, by kind and state (ledger-wide)",
            labels=["kind", "state"],
        )
        failed = CounterMetricFamily(
            "mini_ledger_transfers_failed",
            "Transfers that ended failed, by kind and reason (ledger-wide)",
            labels=["kind", "reason"],
        )
        settle = HistogramMetricFamily(
            "mini_ledger_transfer_settle_seconds",
            "Submit to final (processed - created) of transfers, by kind (ledger-wide)",
            labels=["kind"],
        )
        for kind in KINDS:
            submitted.add_metric([kind], counts.get(submitted_field(kind), 0.0))
            for state in FINAL_STATES:
                final.add_metric([kind, state], counts.get(final_field(kind, state), 0.0))
            for reason in reasons:
                failed.add_metric([kind, reason], counts.get(failed_field(kind, reason), 0.0))
            buckets, total = [], 0.0
            for index, bound in enumerate((*SETTLE_BUCKETS_S, float("inf"))):
                total += counts.get(settle_bucket_field(kind, index), 0.0)
                buckets.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
            settle.add_metric([kind], buckets, sum_value=counts.get(settle_sum_field(kind), 0.0))
        yield from (submitted, final, failed, settle)
        yield from self._webhook_counters(counts)

    def _webhook_counters(self, counts: dict[str, float]) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "mini_ledger_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered (a 2xx), retrying (failed, another "
            "attempt scheduled) or given_up (failed, the retry schedule used up) (ledger-wide)",
            labels=["outcome"],
        )
        for outcome in WEBHOOK_OUTCOMES:
            attempts.add_metric([outcome], counts.get(webhook_field(outcome), 0.0))
        failures = CounterMetricFamily(
            "mini_ledger_webhook_failures",
            "Failed webhook delivery attempts by reason: http_status (not a 2xx), timeout "
            "(no answer within 10 s), connection, private_address (ledger-wide)",
            labels=["reason"],
        )
        for reason in WEBHOOK_FAILURE_REASONS:
            failures.add_metric([reason], counts.get(webhook_failure_field(reason), 0.0))
        yield from (attempts, failures)

    def _gauges(self) -> Iterator[Metric]:
        gauges, audit = self._snapshot.gauges, self._snapshot.audit
        values: dict[str, tuple[str, float | None]] = {
            "mini_ledger_pending_transfers": (
                "Transfers pending now (ledger-wide)",
                gauges.pending_transfers,
            ),
            "mini_ledger_oldest_pending_age_seconds": (
                "Age (since created) of the oldest pending transfer; 0 when none is pending",
                None if gauges.pending_transfers is None else (gauges.oldest_pending_age_s or 0.0),
            ),
            "mini_ledger_queue_depth": (
                "Messages waiting in the transfers queue",
                gauges.queue_depth,
            ),
            "mini_ledger_webhook_undelivered": (
                "Webhook deliveries waiting for a 2xx (due or backing off; ledger-wide)",
                gauges.webhooks_undelivered,
            ),
            "mini_ledger_webhook_oldest_undelivered_age_seconds": (
                "Age (since it happened) of the oldest webhook event not delivered yet; 0 when "
                "none waits",
                None
                if gauges.webhooks_undelivered is None
                else (gauges.webhooks_oldest_undelivered_age_s or 0.0),
            ),
        }
        if audit is not None:
            values |= {
                "mini_ledger_audit_ok": ("1 if the last audit found the ledger sound", audit.ok),
                "mini_ledger_audit_problems": ("Problems the last audit found", audit.problems),
                "mini_ledger_audit_last_run_timestamp_seconds": (
                    "When the last audit ran (Unix time)",
                    audit.checked_at,
                ),
            }
        for name, (documentation, value) in values.items():
            if value is not None:  # A dependency that did not answer: no sample, no guess.
                yield GaugeMetricFamily(name, documentation, value=float(value))
        up = GaugeMetricFamily(
            "mini_ledger_dependency_up",
            "1 if the dependency answered this scrape's reads",
            labels=["dependency"],
        )
        up.add_metric(["database"], float(gauges.database_up))
        up.add_metric(["redis"], float(gauges.redis_up))
        yield up
