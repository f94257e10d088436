"""The system under test: servers (configured or embedded), API and worker processes, seed."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy import create_engine, text

from bench.ceiling_app import QUEUE as CEILING_QUEUE
from bench.ceiling_app import SCHEMA as CEILING_SCHEMA
from bench.ceiling_app import TABLE as CEILING_TABLE
from bench.ceiling_app import ensure_schema
from cli.embedded import EmbeddedServers
from shared.db.migrate import migrate
from shared.infra.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
BENCH_DATABASE = "mini_ledger_bench"
BENCH_REDIS_DB = "14"
SEED_BALANCE = "1000000000"
HOT_SENDER_BALANCE = "1000000000000"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    def __init__(self, api_workers: int, worker_concurrency: int, worker_processes: int) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="mini-ledger-bench-"))
        os.chmod(self.home, 0o755)
        self.servers = EmbeddedServers(self.home)
        self.api_workers = api_workers
        self.worker_concurrency = worker_concurrency
        self.worker_processes = worker_processes
        self.processes: list[subprocess.Popen[bytes]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.embedded = not os.environ.get("POSTGRES_HOST")
        self.api_key = ""  # an admin key, created once the database is migrated

    def start(self) -> Settings:
        os.environ.update(self.servers.start(dict(os.environ)))
        os.environ.update(
            {
                "POSTGRES_DB": BENCH_DATABASE,
                "REDIS_DB": BENCH_REDIS_DB,
                "LOG_LEVEL": "WARNING",
                "MINI_LEDGER_HOME": str(self.home),
                # The sweep is running, but a backlog under load is not "lost": leave it be.
                "STALE_PENDING_AFTER_S": "120",
                "DB_POOL_SIZE": "20",
            }
        )
        settings = load_settings()
        engine = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
        engine.dispose()
        migrate(settings)
        self.api_key = create_admin_key()
        client = redis.Redis.from_url(settings.redis_url)
        client.flushdb()
        client.close()
        self._spawn("api", "--workers", str(self.api_workers), env={"PORT": str(self.port)})
        for _ in range(self.worker_processes):
            self._spawn("worker", "--concurrency", str(self.worker_concurrency))
        self._spawn("beat")
        self._wait_healthy()
        return settings

    def _spawn(self, *argv: str, env: dict[str, str] | None = None) -> None:
        log = (self.home / f"{argv[0]}-{len(self.processes)}.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "cli", *argv],
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def _wait_healthy(self) -> None:
        wait_healthy(self.url, f"the API did not come up; logs in {self.home}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.servers.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def wait_healthy(url: str, failure: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(failure)


def conninfo(settings: Settings) -> str:
    """libpq's connection string for the bench database (a socket directory or a host)."""
    return psycopg.conninfo.make_conninfo(
        host=settings.postgres_host,
        port=str(settings.postgres_port),
        user=settings.postgres_user,
        dbname=settings.postgres_db,
        **({"password": settings.postgres_password} if settings.postgres_password else {}),
    )


class CeilingServer:
    """`bench/ceiling_app.py` under uvicorn (uvloop, httptools) with as many processes as the
    API, on its own port, against the stack's PostgreSQL (its own schema) and Redis (its own
    list, deleted when it stops). Used as a context manager around the `ceiling` scenario."""

    def __init__(self, stack: Stack, settings: Settings) -> None:
        self.stack = stack
        self.settings = settings
        self.conninfo = conninfo(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CeilingServer:
        ensure_schema(self.conninfo)
        log = (self.stack.home / "ceiling.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.ceiling_app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.stack.api_workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "CEILING_DATABASE": self.conninfo,
                "CEILING_REDIS_URL": self.settings.redis_url,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_healthy(self.url, f"the ceiling app did not come up; log in {self.stack.home}")
        return self

    def recorded(self) -> dict[str, Any]:
        """Rows inserted, entries enqueued, and the durability settings they were written with."""
        with psycopg.connect(self.conninfo) as connection:
            rows = connection.execute(f"SELECT count(*) FROM {CEILING_TABLE}").fetchone()
            durability = {
                name: connection.execute(f"SHOW {name}").fetchone()
                for name in ("synchronous_commit", "fsync")
            }
        client = redis.Redis.from_url(self.settings.redis_url)
        enqueued = int(client.llen(CEILING_QUEUE))
        client.close()
        return {
            "rows": int(rows[0]) if rows else 0,
            "enqueued": enqueued,
            **{name: str(row[0]) if row else "" for name, row in durability.items()},
        }

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        client = redis.Redis.from_url(self.settings.redis_url)
        client.delete(CEILING_QUEUE)
        client.close()
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {CEILING_SCHEMA} CASCADE")


def create_admin_key() -> str:
    """An admin key made with the operator's command (its secret is the last line printed)."""
    created = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--admin", "--name", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


async def seed(url: str, api_key: str, merchants: int) -> None:
    """`merchants` merchants with a 1% fee and a large USD balance (merchant 0 the largest)."""
    semaphore = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:

        async def one(index: int) -> None:
            async with semaphore:
                created = await client.post(
                    "/v1/merchants", json={"name": f"bench-m-{index}", "percent_fee": "1"}
                )
                created.raise_for_status()
                amount = HOT_SENDER_BALANCE if index < 2 else SEED_BALANCE
                opened = await client.post(
                    "/v1/merchants/balance",
                    json={
                        "merchant_id": created.json()["result"]["id"],
                        "currency": "USD",
                        "initial_amount": amount,
                    },
                )
                opened.raise_for_status()

        await asyncio.gather(*(one(index) for index in range(merchants)))
