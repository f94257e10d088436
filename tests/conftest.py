"""Test servers: the configured PostgreSQL and Redis when the environment names them,
embedded ones otherwise; a fresh test database, migrated; real Celery worker processes.

Servers are chosen in `pytest_configure`, before any test module imports the Celery app,
because the app reads its broker address from the environment at import time.
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
    "JSON_LOGS": "true",
}

# The admin key every test client sends (created with the test database).
ADMIN_SECRET = "mlk_" + "t" * 43
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}

_embedded = None
_home: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _embedded, _home
    from cli.embedded import EmbeddedServers

    _home = tempfile.mkdtemp(prefix="mini-ledger-test-")
    os.chmod(_home, 0o755)
    _embedded = EmbeddedServers(Path(_home))
    os.environ.update(_embedded.start(dict(os.environ)))
    os.environ.update(TEST_ENVIRONMENT)
    _reset_database()
    _reset_redis()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _embedded is not None:
        _embedded.stop()
    if _home is not None:
        shutil.rmtree(_home, ignore_errors=True)


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
        log_path = Path(_home or tempfile.gettempdir()) / f"proc-{time.monotonic_ns()}.log"
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
    return processes.start(
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--queues=transfers,maintenance",
        f"--concurrency={concurrency}",
        f"--hostname={name}@%h",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=WARNING",
    )


def start_beat(processes: Processes) -> subprocess.Popen[bytes]:
    schedule = Path(_home or tempfile.gettempdir()) / f"beat-{time.monotonic_ns()}"
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
async def client(app: object, workers: Processes) -> AsyncIterator[object]:
    """An HTTP client on the in-process API; the session's real workers apply transfers."""
    import httpx

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ledger", headers=ADMIN_HEADERS
    ) as http:
        yield http
