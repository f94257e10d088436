"""`/metrics` with real processes: exact counts, one view across API processes and servers.

A deployment of its own (its own database and Redis: nothing else submits, settles, sweeps or
counts there): API server A runs two uvicorn processes on one metrics directory, API server B
(another machine, as far as metrics go) one; `mini-ledger worker` with its exporter, and beat.
Transfers are submitted through both servers; every server's `/metrics` then shows the same
exact ledger-wide counts, and A's HTTP counters are the sum over both of its processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from cli.embedded import EmbeddedRedis
from shared.db.migrate import migrate
from shared.infra.config import Settings, load_settings
from tests.conftest import ADMIN_HEADERS, TEST_DATABASE, Processes, _create_admin_key
from tests.e2e.conftest import free_port, start_api
from tests.helpers import funded_merchant, unique

DATABASE = f"{TEST_DATABASE}_processes"
SENDERS = 8
PER_BATCH = 5  # Each sender: 5 transfers of 3 from a balance of 10 -> 3 complete, 2 fail.
DEADLINE_S = 90
MAX_SPREAD_REQUESTS = 400

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Deployment:
    a: str  # API server A: two uvicorn processes
    b: str  # API server B: one
    a_metrics_dir: Path
    worker_metrics: str


def _drop(settings: Settings) -> None:
    engine = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    settings = dataclasses.replace(load_settings(), postgres_db=DATABASE)
    _drop(settings)
    migrate(settings)
    _create_admin_key(settings)
    folder = Path(tempfile.mkdtemp(prefix="mini-ledger-metrics-"))
    redis = EmbeddedRedis(folder)
    env = {**redis.start(), "POSTGRES_DB": DATABASE}
    processes = Processes()
    try:
        a_metrics_dir = folder / "api-a-metrics"
        a = start_api(
            processes, {**env, "API_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(a_metrics_dir)}
        )
        b = start_api(processes, env)
        worker_port = free_port()
        # As deployed: `mini-ledger worker` (its pool of two processes, one exporter).
        processes.start(
            *("-m", "cli", "worker", "--concurrency", "2"),
            env={**env, "WORKER_METRICS_PORT": str(worker_port)},
        )
        processes.start(
            *("-m", "celery", "-A", "worker.app", "beat", f"--schedule={folder / 'beat'}"),
            "--loglevel=WARNING",
            env=env,
        )
        yield Deployment(a, b, a_metrics_dir, f"http://127.0.0.1:{worker_port}/metrics")
    finally:
        processes.stop_all()
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
        _drop(settings)


@pytest.fixture
async def clients(deployment: Deployment) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """A and B; no kept-alive connections, so every request may reach either of A's processes."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(
            base_url=deployment.a, headers=ADMIN_HEADERS, timeout=60, limits=limits
        ) as a,
        httpx.AsyncClient(
            base_url=deployment.b, headers=ADMIN_HEADERS, timeout=60, limits=limits
        ) as b,
    ):
        yield a, b


def parse(text_format: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text_format)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient, url: str = "/metrics") -> Samples:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return parse(response.text)


def writer_pids(directory: Path) -> set[str]:
    """The processes that wrote metrics into a multiprocess directory (`counter_<pid>.db`)."""
    return {path.stem.rsplit("_", 1)[-1] for path in directory.glob("*.db")}


async def spread_over_both_processes(a: httpx.AsyncClient, directory: Path) -> int:
    """GET /health on fresh connections until both of A's processes have answered some;
    returns how many were sent."""
    sent = 0
    while len(writer_pids(directory)) < 2 and sent < MAX_SPREAD_REQUESTS:
        answers = await asyncio.gather(*(a.get("/health") for _ in range(10)))
        assert all(answer.status_code == 200 for answer in answers)
        sent += len(answers)
    assert len(writer_pids(directory)) == 2, f"one process answered all {sent} requests"
    return sent


async def submit_batch(client: httpx.AsyncClient, sender: str, receiver: str) -> str:
    items = [
        {
            "idempotency_key": unique("metrics"),
            "from_merchant": sender,
            "to_merchant": receiver,
            "amount": "3",
            "currency": "USD",
        }
        for _ in range(PER_BATCH)
    ]
    response = await client.post("/v1/batches", json={"transfers": items})
    assert response.status_code == 202, response.text
    assert response.json()["result"]["accepted"] == PER_BATCH
    batch_id: str = response.json()["result"]["id"]
    return batch_id


async def wait_finished(client: httpx.AsyncClient, batch_ids: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    for batch_id in batch_ids:
        while True:
            response = await client.get(f"/v1/batches/{batch_id}")
            assert response.status_code == 200, response.text
            if response.json()["result"]["finished"]:
                break
            assert time.monotonic() < deadline, f"batch {batch_id} still pending"
            await asyncio.sleep(0.2)


async def test_exact_counts_across_processes_and_servers(
    deployment: Deployment, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    a, b = clients
    requests = "mini_ledger_http_requests_total"
    health = {"method": "GET", "route": "/health", "status": "200"}
    before = value(await scrape(a), requests, **health)  # start_api's polls
    health_on_a = await spread_over_both_processes(a, deployment.a_metrics_dir)
    receiver = await funded_merchant(a, "0")
    senders = [await funded_merchant(a, "10") for _ in range(SENDERS)]
    servers = [a if index % 2 == 0 else b for index in range(SENDERS)]
    batch_ids = await asyncio.gather(
        *(
            submit_batch(server, sender["name"], receiver["name"])
            for server, sender in zip(servers, senders, strict=True)
        )
    )
    await wait_finished(a, batch_ids)

    total = SENDERS * PER_BATCH
    completed, failed = 3 * SENDERS, 2 * SENDERS
    final = "mini_ledger_transfers_final_total"

    def settled(samples: Samples) -> bool:
        """Submissions flushed (about a second), outcomes counted, gauges past their cache."""
        return (
            value(samples, "mini_ledger_transfers_submitted_total", kind="transfer") == total
            and value(samples, final, kind="transfer", state="completed")
            + value(samples, final, kind="transfer", state="failed")
            == total
            and value(samples, "mini_ledger_pending_transfers") == 0
            and value(samples, "mini_ledger_queue_depth") == 0
        )

    deadline = time.monotonic() + DEADLINE_S
    while not settled(on_a := await scrape(a)) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    on_b = await scrape(b)

    # The ledger-wide numbers: exact, and the same from either server.
    for samples in (on_a, on_b):
        assert value(samples, "mini_ledger_transfers_submitted_total", kind="transfer") == total
        assert value(samples, final, kind="transfer", state="completed") == completed
        assert value(samples, final, kind="transfer", state="failed") == failed
        reasons = "mini_ledger_transfers_failed_total"
        assert value(samples, reasons, kind="transfer", reason="insufficient_funds") == failed
        settle = "mini_ledger_transfer_settle_seconds"
        assert value(samples, f"{settle}_count", kind="transfer") == total
        assert value(samples, f"{settle}_bucket", kind="transfer", le="+Inf") == total
        assert value(samples, "mini_ledger_pending_transfers") == 0
        assert value(samples, "mini_ledger_queue_depth") == 0
        for kind in ("deposit", "withdrawal", "reversal"):
            assert value(samples, "mini_ledger_transfers_submitted_total", kind=kind) == 0

    # HTTP metrics: A's are the sum over both of its processes, B's its own.
    batches = {"method": "POST", "route": "/v1/batches", "status": "202"}
    assert len(writer_pids(deployment.a_metrics_dir)) == 2
    assert value(on_a, requests, **health) - before == health_on_a
    assert value(on_a, requests, **batches) == servers.count(a)
    assert value(on_b, requests, **batches) == servers.count(b)

    # The worker's own metrics, from its exporter (its pool's processes summed).
    async with httpx.AsyncClient(timeout=10) as plain:
        worker = await scrape(plain, deployment.worker_metrics)
    group = {"task": "mini_ledger.apply_transfer_group"}
    assert value(worker, "mini_ledger_worker_tasks_total", **group, state="SUCCESS") >= SENDERS
    assert value(worker, "mini_ledger_worker_task_duration_seconds_count", **group) >= SENDERS
    assert value(worker, "mini_ledger_worker_group_size_count") >= SENDERS
    assert value(worker, "mini_ledger_worker_group_size_sum") >= total
    assert ("mini_ledger_worker_lock_retries_total", frozenset()) in worker
