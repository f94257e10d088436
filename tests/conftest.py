"""Test servers: the configured PostgreSQL and Redis when the environment names them,
embedded ones otherwise; a fresh test database, migrated; real Celery worker processes.

Every test is marked by its layer: `unit` (tests/domain: pure, no servers), `e2e` (tests/e2e:
real API and worker processes) or `integration` (the rest: real PostgreSQL and Redis). Servers
start once, for the first test that is not `unit`: `make test-fast` (`-m unit`) needs none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DATABASE = os.environ.get("TEST_POSTGRES_DB", "mini_ledger_test")
# A Redis database of its own, flushed at the start of the run.
TEST_REDIS_DB = os.environ.get("TEST_REDIS_DB", "15")
# Short enough that fault tests see lost transfers swept back within seconds.
TEST_ENVIRONMENT = {
    "POSTGRES_DB": TEST_DATABASE,
    "REDIS_DB": TEST_REDIS_DB,
    "STALE_PENDING_AFTER_S": "3",
    "SWEEP_INTERVAL_S": "1",
    "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    # Webhook receivers in tests listen on 127.0.0.1; retries within seconds, given up after
    # six attempts (about 7 s), and a delivery run handed out twice a second.
    "WEBHOOK_ALLOW_PRIVATE": "true",
    "WEBHOOK_RETRY_SCHEDULE": "200ms,500ms,1s,2s,3s",
    "WEBHOOK_POLL_INTERVAL_S": "0.5",
    "JSON_LOGS": "true",
}

# The admin key every test client sends (created with the test database).
ADMIN_SECRET = "mlk_" + "t" * 43
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}

_home = Path(tempfile.mkdtemp(prefix="mini-ledger-test-"))
LAYER_MARKERS = {"domain": "unit", "e2e": "e2e"}


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports the Celery app, which reads its broker's database number
    # from the environment. The servers' addresses come later, with the `servers` fixture.
    os.environ.update(TEST_ENVIRONMENT)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        layer = item.path.relative_to(ROOT / "tests").parts[0]
        if not any(item.get_closest_marker(name) for name in ("unit", "integration", "e2e")):
            item.add_marker(LAYER_MARKERS.get(layer, "integration"))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """PostgreSQL and Redis for the session (unless every selected test is a unit test): the
    configured ones, or embedded ones started here; the test database made afresh."""
    if all(item.get_closest_marker("unit") for item in request.session.items):
        yield
        return
    from cli.embedded import EmbeddedServers
    from shared.infra.config import get_settings, load_settings
    from shared.infra.queue import celery_app

    os.chmod(_home, 0o755)
    embedded = EmbeddedServers(_home)
    os.environ.update(embedded.start(dict(os.environ)))
    get_settings.cache_clear()
    celery_app.conf.broker_url = load_settings().broker_url
    try:
        _reset_database()
        _reset_redis()
        yield
    finally:
        embedded.stop()


def _reset_database() -> None:
    from sqlalchemy import create_engine, text

    from shared.db.migrate import migrate
    from shared.infra.config import load_settings

    settings = load_settings()
    engine = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)'))
    engine.dispose()
    migrate(settings)
    _create_admin_key(settings)


def _create_admin_key(settings: object) -> None:
    from sqlalchemy import create_engine

    from shared.db.tables import api_keys
    from shared.domain.access import hash_secret

    engine = create_engine(settings.database_url)  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(
            api_keys.insert().values(
                id=uuid.uuid4(), name="tests", scope="write", secret_hash=hash_secret(ADMIN_SECRET)
            )
        )
    engine.dispose()


def _reset_redis() -> None:
    import redis

    from shared.infra.config import load_settings

    client = redis.Redis.from_url(load_settings().redis_url)
    client.flushdb()
    client.close()


class Processes:
    """Real processes started by a test fixture; stopped (and reaped) at teardown."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.log_paths: dict[int, Path] = {}

    def start(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log_path = _home / f"proc-{time.monotonic_ns()}.log"
        log = log_path.open("ab")
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        self.log_paths[process.pid] = log_path
        return process

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 15
        for process in self.running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()
        for log in self.logs:
            log.close()
        self.logs.clear()


def start_worker(processes: Processes, name: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
    from shared.infra.queue import WORKER_QUEUES

    return processes.start(
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        f"--queues={','.join(WORKER_QUEUES)}",
        f"--concurrency={concurrency}",
        f"--hostname={name}@%h",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=WARNING",
    )


def start_beat(processes: Processes) -> subprocess.Popen[bytes]:
    schedule = _home / f"beat-{time.monotonic_ns()}"
    return processes.start(
        "-m", "celery", "-A", "worker.app", "beat", f"--schedule={schedule}", "--loglevel=WARNING"
    )


@pytest.fixture(scope="session")
def workers() -> Iterator[Processes]:
    """Two real Celery worker processes and the beat that sweeps stale pending transfers."""
    processes = Processes()
    start_worker(processes, "session-a")
    start_worker(processes, "session-b")
    start_beat(processes)
    yield processes
    processes.stop_all()


@pytest.fixture(scope="session")
def sync_db() -> Iterator[object]:
    from shared.infra.config import load_settings
    from shared.infra.database import SyncDatabase
    from shared.infra.engine import create_worker_engine

    engine = create_worker_engine(load_settings(), application_name="mini-ledger-tests")
    yield SyncDatabase(engine)
    engine.dispose()


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[object]:
    from api.main import create_app, lifespan
    from shared.infra.config import load_settings

    application = create_app(load_settings())
    async with lifespan(application):
        yield application


@pytest.fixture(scope="session")
async def api_client(app: object) -> AsyncIterator[object]:
    """An HTTP client on the in-process API, with the admin key, and no workers: for tests of
    what the API answers by itself (validation, merchants, errors)."""
    import httpx

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ledger", headers=ADMIN_HEADERS
    ) as http:
        yield http


@pytest.fixture(scope="session")
def client(api_client: object, workers: Processes) -> object:
    """The same client, with the session's real workers applying transfers."""
    return api_client
