"""The worker's metrics: its own, on an exporter of its own, and the ledger-wide counts of the
outcomes it decides.

- Its own (`mini_ledger_worker_*`): task durations and outcomes (from Celery's signals), the
  size of each group it applied, and how often balance locks stayed busy. Flower's `/metrics`
  sees only task events (names, runtimes, states) and nothing inside a task, so the worker
  serves these itself: with `WORKER_METRICS_PORT` set, its main process serves `/metrics` on
  `HOST:WORKER_METRICS_PORT` (one Prometheus target per worker), summing its pool's processes
  through prometheus_client's multiprocess mode. `celery` imports prometheus_client as it starts
  (Flower's command plugin), so `mini-ledger worker` names a private `PROMETHEUS_MULTIPROC_DIR`
  before it starts Celery; the directory is removed when the worker stops.
- The outcomes (`record_group`): transfers made final by kind and state, failures by reason, and
  settle times go to the ledger-wide counters in Redis (`shared.services.operations`), which
  every API process shows at its `/metrics`: one view, however many workers on however many
  machines decided them. Counts Redis did not take are kept and sent with the next group.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from celery.signals import task_postrun, task_prerun, worker_init, worker_shutdown
from redis import Redis
from redis.exceptions import RedisError

from shared.services.operations import FinalTransfer, add_counts, settled_increments

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

log = structlog.get_logger(__name__)

PORT_VARIABLE = "WORKER_METRICS_PORT"
# `mini-ledger worker` makes the worker a private multiprocess directory with this prefix.
METRICS_DIR_PREFIX = "mini-ledger-worker-metrics-"
TASK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
GROUP_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    task_duration: Histogram
    tasks: Counter
    group_size: Histogram
    lock_retries: Counter


@cache
def worker_metrics() -> WorkerMetrics:
    """Created on first use, in the process that uses it (a pool process, after the fork)."""
    from prometheus_client import Counter, Histogram, disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]
    return WorkerMetrics(
        task_duration=Histogram(
            "mini_ledger_worker_task_duration_seconds",
            "Time a worker spent on a task, by task name",
            ["task"],
            buckets=TASK_BUCKETS_S,
        ),
        tasks=Counter(
            "mini_ledger_worker_tasks",
            "Tasks a worker ran, by task name and Celery state (SUCCESS, FAILURE, RETRY)",
            ["task", "state"],
        ),
        group_size=Histogram(
            "mini_ledger_worker_group_size",
            "Transfers a worker applied in one transaction (a group)",
            buckets=GROUP_SIZE_BUCKETS,
        ),
        lock_retries=Counter(
            "mini_ledger_worker_lock_retries",
            "Times a transfer's balance locks stayed busy and its task was retried later",
        ),
    )


# ---------------------------------------------------------------------------------------------
# What the tasks call (worker/tasks.py)


class _Unsent:
    """Ledger-wide increments Redis has not taken yet (bounded: one entry per counter)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.increments: defaultdict[str, float] = defaultdict(float)


_unsent = _Unsent()


def record_group(redis: Redis, *, size: int, settled: Iterable[FinalTransfer]) -> None:
    """After a group's transaction committed: its size (transfers it took on), and each transfer
    it made final (`kind`, `state`, `failure_reason`, `created`, `processed`: a domain
    `Transfer` as written). Never raises for Redis."""
    if size > 0:
        worker_metrics().group_size.observe(size)
    with _unsent.lock:
        for field, amount in settled_increments(settled).items():
            _unsent.increments[field] += amount
        if not _unsent.increments:
            return
        try:
            add_counts(redis, _unsent.increments)
        except RedisError as error:
            log.warning("metrics: outcome counts kept for the next group", error=str(error))
            return
        _unsent.increments.clear()


def count_lock_retry() -> None:
    """A transfer's balance locks stayed busy: its task is retried later."""
    worker_metrics().lock_retries.inc()


# ---------------------------------------------------------------------------------------------
# Celery's signals: task timings in every process, the exporter in the main one


_task_started: dict[str, float] = {}


@task_prerun.connect
def _task_started_at(task_id: str, **_: Any) -> None:
    _task_started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    started = _task_started.pop(task_id, None)
    metrics = worker_metrics()
    name = str(getattr(task, "name", "unknown"))
    metrics.tasks.labels(name, state or "UNKNOWN").inc()
    if started is not None:
        metrics.task_duration.labels(name).observe(time.perf_counter() - started)


@dataclass
class _Exporter:
    server: Any = None


_exporter = _Exporter()


@worker_init.connect
def _start_exporter(**_: Any) -> None:
    """In the main process, before the pool forks: the exporter, if `WORKER_METRICS_PORT` asks."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    port = os.environ.get(PORT_VARIABLE, "").strip()
    if not port:
        return
    registry = REGISTRY
    if values.ValueClass._multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        log.warning(
            "metrics: PROMETHEUS_MULTIPROC_DIR was not set when the worker started"
            " (`mini-ledger worker` sets it): the pool's processes are not exported"
        )
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        _exporter.server, _thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as error:  # A port taken must not stop the worker from applying transfers.
        log.warning("metrics: worker exporter not started", port=port, error=str(error))
        return
    log.info("worker metrics exported", url=f"http://{host}:{port}/metrics")


@worker_shutdown.connect
def _stop_exporter(**_: Any) -> None:
    if _exporter.server is not None:
        _exporter.server.shutdown()
    # Only the directory `mini-ledger worker` made for this worker; never one the operator named.
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or ".")
    if directory.name.startswith(METRICS_DIR_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)
