"""`/metrics`: every SPEC metric, route templates as labels, the ledger-wide counters and
gauges, and the dashboard and alert rules naming only what is exported.

In process (one API process, no workers): the outcome counters are fed as a worker feeds them
(`worker.metrics.record_group`). Several processes and real workers:
tests/e2e/test_metrics_processes.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis as AsyncRedis

from api.metrics import exposition
from shared.infra.config import Settings, load_settings
from shared.infra.database import Database, SyncDatabase
from shared.infra.engine import create_api_engine
from shared.infra.queue import TRANSFERS_QUEUE
from shared.services import operations
from shared.services.operations import GAUGES_CACHE_KEY, GaugeCache, ledger_snapshot
from tests.conftest import ROOT
from tests.helpers import count, funded_merchant, record_pending, unique
from worker.metrics import record_group, worker_metrics

SPEC_METRICS = {
    "mini_ledger_http_requests_total": {"method", "route", "status"},
    "mini_ledger_http_request_duration_seconds_bucket": {"method", "route", "le"},
    "mini_ledger_transfers_submitted_total": {"kind"},
    "mini_ledger_transfers_final_total": {"kind", "state"},
    "mini_ledger_transfer_settle_seconds_bucket": {"kind", "le"},
    "mini_ledger_pending_transfers": set(),
    "mini_ledger_oldest_pending_age_seconds": set(),
    "mini_ledger_queue_depth": set(),
}
DEADLINE_S = 15
OWN_KEYS = ("LEDGER_COUNTERS_KEY", "AUDIT_KEY")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def keyless(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """What Prometheus is: a client with no API key."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        yield http


@pytest.fixture
def sync_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(load_settings().redis_url)
    yield client
    client.close()


async def scrape(keyless: httpx.AsyncClient) -> tuple[str, Samples]:
    response = await keyless.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text, parse(response.text)


@dataclass(frozen=True)
class Final:
    """A transfer as a worker leaves it final: what `record_group` reads."""

    kind: str
    state: str
    failure_reason: str | None
    created: datetime
    processed: datetime | None


def settled_after(seconds: float, state: str = "completed", reason: str | None = None) -> Final:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return Final("withdrawal", state, reason, created, created + timedelta(seconds=seconds))


class TestExposition:
    async def test_every_spec_metric_with_its_labels(self, keyless: httpx.AsyncClient) -> None:
        assert (await keyless.get("/health")).status_code == 200
        _, samples = await scrape(keyless)
        labels_by_name: dict[str, set[str]] = {}
        for name, labels in samples:
            labels_by_name.setdefault(name, set()).update(key for key, _ in labels)
        for name, labels in SPEC_METRICS.items():
            assert name in labels_by_name, name
            assert labels_by_name[name] == labels, name

    async def test_metrics_need_no_key_and_are_not_counted(
        self, keyless: httpx.AsyncClient
    ) -> None:
        await scrape(keyless)
        text, _ = await scrape(keyless)
        assert 'route="/metrics"' not in text


class TestRouteLabels:
    async def test_routes_are_templates_never_ids_or_names(
        self, keyless: httpx.AsyncClient, api_client: httpx.AsyncClient
    ) -> None:
        transfer_id, name = str(uuid.uuid4()), unique("secret-name")
        template = "/v1/transfers/{transfer_id}"
        _, before = await scrape(keyless)
        assert (await api_client.get(f"/v1/transfers/{transfer_id}")).status_code == 404
        assert (await api_client.get(f"/transfers/{transfer_id}")).status_code == 404
        assert (await keyless.get(f"/v1/transfers/{transfer_id}")).status_code == 401
        assert (await api_client.get(f"/v1/merchants/{name}")).status_code == 404
        await api_client.get(f"/v1/transfers/{transfer_id}/")  # a trailing-slash redirect
        await keyless.get(f"/v1/transfers/{transfer_id}/")
        assert (await api_client.get(f"/nowhere/{transfer_id}")).status_code == 404
        text, after = await scrape(keyless)

        assert transfer_id not in text and name not in text
        assert not re.search(r'route="[^"]*[0-9a-f]{8}-[0-9a-f]{4}-', text)

        def grew(route: str, status: str) -> float:
            labels = {"method": "GET", "route": route, "status": status}
            name = "mini_ledger_http_requests_total"
            return value(after, name, **labels) - value(before, name, **labels)

        assert grew(template, "404") == 1
        assert grew(template, "401") == 1
        assert grew("/transfers/{transfer_id}", "404") == 1
        assert grew("/v1/merchants/{merchant_name}", "404") == 1
        assert grew("unmatched", "404") >= 1
        count = "mini_ledger_http_request_duration_seconds_count"
        timed = {"method": "GET", "route": template}
        assert value(after, count, **timed) - value(before, count, **timed) == 2


class TestLedgerCounters:
    @pytest.fixture(autouse=True)
    async def own_counters(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[None]:
        """Counters of these tests alone: the session's workers, settling earlier tests'
        transfers, may add to the real ones meanwhile."""
        await operations.submission_counts.flush(app.state.redis)  # Earlier tests' counts.
        keys = {name: f"{getattr(operations, name)}:test-{uuid.uuid4().hex}" for name in OWN_KEYS}
        for name, key in keys.items():
            monkeypatch.setattr(operations, name, key)
        yield
        await app.state.redis.delete(*keys.values())

    async def test_submissions_counted_in_a_process_reach_the_scrape(
        self, keyless: httpx.AsyncClient, app: FastAPI
    ) -> None:
        name = "mini_ledger_transfers_submitted_total"
        _, before = await scrape(keyless)
        operations.count_submitted("deposit", 3)
        operations.count_submitted("reversal")
        # The API flushes its counts to Redis about once a second.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            _, after = await scrape(keyless)
            deposits = value(after, name, kind="deposit") - value(before, name, kind="deposit")
            if deposits == 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert deposits == 3
        assert value(after, name, kind="reversal") - value(before, name, kind="reversal") == 1
        assert value(after, name, kind="transfer") == value(before, name, kind="transfer")

    async def test_outcomes_recorded_by_a_worker(
        self, keyless: httpx.AsyncClient, sync_redis: redis.Redis
    ) -> None:
        _, before = await scrape(keyless)
        record_group(
            sync_redis,
            size=3,
            settled=[
                settled_after(0.2),
                settled_after(2, "failed", "Insufficient funds"),
                settled_after(40, "failed", "Internal error: the transfer could not be applied"),
            ],
        )
        _, after = await scrape(keyless)

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        final, failed = "mini_ledger_transfers_final_total", "mini_ledger_transfers_failed_total"
        assert grew(final, kind="withdrawal", state="completed") == 1
        assert grew(final, kind="withdrawal", state="failed") == 2
        assert grew(failed, kind="withdrawal", reason="insufficient_funds") == 1
        assert grew(failed, kind="withdrawal", reason="internal_error") == 1
        assert grew(failed, kind="withdrawal", reason="other") == 0
        assert grew(final, kind="transfer", state="completed") == 0
        bucket = "mini_ledger_transfer_settle_seconds_bucket"
        cumulative = {"0.1": 0, "0.25": 1, "1.0": 1, "2.5": 2, "30.0": 2, "60.0": 3, "+Inf": 3}
        for le, observed in cumulative.items():
            assert grew(bucket, kind="withdrawal", le=le) == observed, le
        assert grew("mini_ledger_transfer_settle_seconds_count", kind="withdrawal") == 3
        settle_sum = grew("mini_ledger_transfer_settle_seconds_sum", kind="withdrawal")
        assert settle_sum == pytest.approx(42.2)

    async def test_audit_outcome(
        self, keyless: httpx.AsyncClient, app: FastAPI, sync_redis: redis.Redis
    ) -> None:
        checked = datetime.now(UTC)
        operations.record_audit(sync_redis, ok=False, problems=2, checked_at=checked)
        _, failing = await scrape(keyless)
        await operations.record_audit_async(app.state.redis, True, 0, checked)
        _, passing = await scrape(keyless)
        assert value(failing, "mini_ledger_audit_ok") == 0
        assert value(failing, "mini_ledger_audit_problems") == 2
        assert value(passing, "mini_ledger_audit_ok") == 1
        stamp = value(passing, "mini_ledger_audit_last_run_timestamp_seconds")
        assert stamp == pytest.approx(checked.timestamp())


class TestGauges:
    async def test_pending_and_queue_depth_match_the_ledger(
        self,
        keyless: httpx.AsyncClient,
        api_client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        sync_redis: redis.Redis,
    ) -> None:
        sender = await funded_merchant(api_client, "100")
        receiver = await funded_merchant(api_client, "0")
        await record_pending(app.state.database, [(sender["name"], receiver["name"], Decimal(1))])
        # Cached for a second, and the session's workers (if running) may settle transfers
        # meanwhile: read until the scrape and the database agree.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            _, samples = await scrape(keyless)
            pending = count(sync_db, "SELECT count(*) FROM transfers WHERE state = 'pending'")
            depth = int(sync_redis.llen(TRANSFERS_QUEUE))
            shown = (
                value(samples, "mini_ledger_pending_transfers"),
                value(samples, "mini_ledger_queue_depth"),
            )
            if shown == (pending, depth) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert shown == (pending, depth)
        assert value(samples, "mini_ledger_dependency_up", dependency="database") == 1
        assert value(samples, "mini_ledger_dependency_up", dependency="redis") == 1
        if pending:
            assert value(samples, "mini_ledger_oldest_pending_age_seconds") > 0

    async def test_one_query_per_interval_shared_through_redis(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(operations, "GAUGES_CACHE_S", 30.0)
        redis_client: AsyncRedis = app.state.redis
        await redis_client.delete(GAUGES_CACHE_KEY)
        first = await ledger_snapshot(app.state.database, redis_client, GaugeCache())
        assert 1000 < await redis_client.pttl(GAUGES_CACHE_KEY) <= 30_000
        # Another process (a cache of its own) whose database is unreachable: it reads the
        # shared summary and never touches the database.
        unreachable = create_api_engine(unreachable_database())
        try:
            second = await ledger_snapshot(Database(unreachable), redis_client, GaugeCache())
        finally:
            await unreachable.dispose()
            await redis_client.delete(GAUGES_CACHE_KEY)
        assert second.gauges.database_up
        assert second.gauges.pending_transfers == first.gauges.pending_transfers
        assert second.gauges.queue_depth == int(await redis_client.llen(TRANSFERS_QUEUE))

    async def test_a_database_that_does_not_answer_leaves_the_gauges_out(
        self, app: FastAPI
    ) -> None:
        unreachable = create_api_engine(unreachable_database())
        redis_client: AsyncRedis = app.state.redis
        await redis_client.delete(GAUGES_CACHE_KEY)
        try:
            snapshot = await ledger_snapshot(Database(unreachable), redis_client, GaugeCache())
        finally:
            await unreachable.dispose()
        assert not snapshot.gauges.database_up
        assert snapshot.gauges.pending_transfers is None
        text = _render(snapshot)
        assert "mini_ledger_pending_transfers " not in text
        assert 'mini_ledger_dependency_up{dependency="database"} 0.0' in text

    async def test_a_redis_that_does_not_answer_leaves_the_counters_out(self, app: FastAPI) -> None:
        # Counters made up as 0 would read as a reset, and their return as a burst.
        nowhere = AsyncRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
        try:
            snapshot = await ledger_snapshot(app.state.database, nowhere, GaugeCache())
        finally:
            await nowhere.aclose()
        text = _render(snapshot)
        assert snapshot.counts is None
        assert "mini_ledger_transfers_final_total" not in text
        assert "mini_ledger_transfer_settle_seconds_bucket" not in text
        assert "mini_ledger_queue_depth " not in text
        assert 'mini_ledger_dependency_up{dependency="redis"} 0.0' in text
        assert "mini_ledger_pending_transfers " in text  # The database still answered.


def unreachable_database() -> Settings:
    """Settings naming an address where nothing listens: a connection is refused at once."""
    return dataclasses.replace(load_settings(), postgres_host="127.0.0.1", postgres_port=1)


def _render(snapshot: operations.LedgerSnapshot) -> str:
    return exposition(snapshot).decode()


class TestDeployFiles:
    """The dashboard and the alert rules name only metrics that exist."""

    async def test_dashboard_and_rules_use_exported_metrics(
        self, keyless: httpx.AsyncClient, api_client: httpx.AsyncClient, sync_redis: redis.Redis
    ) -> None:
        await api_client.get("/health")
        # The audit's gauges exist once an audit has run.
        operations.record_audit(sync_redis, ok=True, problems=0, checked_at=datetime.now(UTC))
        metrics = worker_metrics()  # Registers the worker's own in this process too.
        metrics.task_duration.labels("t").observe(1)
        metrics.tasks.labels("t", "SUCCESS").inc()
        metrics.group_size.observe(1)
        metrics.lock_retries.inc(0)
        _, samples = await scrape(keyless)
        exported = {name for name, _ in samples} | {
            sample.name
            for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
            for sample in family.samples
        }
        files = [
            *(ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"),
            *(ROOT / "deploy" / "prometheus").glob("*.yml"),
        ]
        assert len(files) >= 3
        referenced: dict[str, Path] = {}
        for path in files:
            for name in re.findall(r"\bmini_ledger_[a-z_]+", path.read_text()):
                referenced.setdefault(name, path)
        assert referenced
        missing = {name: str(path) for name, path in referenced.items() if name not in exported}
        assert missing == {}

    def test_prometheus_accepts_the_config_and_the_alerts_pass_their_tests(
        self, tmp_path: Path
    ) -> None:
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
        deploy = ROOT / "deploy" / "prometheus"
        # The config names the rules where the container mounts them: check a copy pointing here.
        config = tmp_path / "prometheus.yml"
        config.write_text(
            (deploy / "prometheus.yml")
            .read_text()
            .replace("/etc/prometheus/alerts.yml", str(deploy / "alerts.yml"))
        )
        for command in (["check", "config", str(config)], ["test", "rules", "alerts_test.yml"]):
            result = subprocess.run(
                [promtool, *command], cwd=deploy, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stdout + result.stderr
