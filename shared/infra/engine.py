"""Engine factories: async for the API, sync for the worker; every limit passed explicitly."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.infra.config import Settings

CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10


# How long the API's single statements wait for a row lock: in autocommit the only one that can
# wait is a group's insert, on a key another transaction is inserting (a batch, say), and it
# must not hold the process's other submissions; `Database.transaction()` waits the full time.
API_LOCK_TIMEOUT_MS = 200


def _connect_args(
    settings: Settings, application_name: str, lock_timeout_ms: int | None = None
) -> dict[str, Any]:
    lock_timeout = settings.statement_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    return {
        "application_name": application_name,
        "connect_timeout": CONNECT_TIMEOUT_S,
        # No query and no row-lock wait may hang a request or a worker forever.
        "options": (
            f"-c statement_timeout={settings.statement_timeout_ms}"
            f" -c lock_timeout={lock_timeout}"
            " -c idle_in_transaction_session_timeout=60000"
            # A client that vanished (a partitioned worker) is noticed in about a minute, and
            # its session's locks (the webhook runner's) are released, not held for hours.
            " -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
            " -c timezone=UTC"
        ),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def create_api_engine(settings: Settings, application_name: str = "mini-ledger-api") -> AsyncEngine:
    """The API's pool. No overflow: an overflow connection is closed when returned, and under
    load that means a new PostgreSQL backend (a fork) per request; requests beyond the pool
    wait for a connection.

    Connections are in autocommit: nearly all the API's work is single statements (reads, a
    group's insert), which then cost no BEGIN/COMMIT and no switch of mode per checkout;
    `Database.transaction()` asks for a transaction where one is needed (and waits for row
    locks as long as a statement may; a single statement, `API_LOCK_TIMEOUT_MS`). No ping per
    checkout
    (a round trip on every request): a connection a restarted PostgreSQL broke fails its one
    request (503, retried by the client under the same Idempotency-Key), and that failure
    makes the pool replace every connection as old as it.
    """
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        isolation_level="AUTOCOMMIT",
        connect_args=_connect_args(settings, application_name, API_LOCK_TIMEOUT_MS),
    )


def create_worker_engine(
    settings: Settings, application_name: str = "mini-ledger-worker"
) -> Engine:
    # A worker process runs one task at a time: two connections cover the task and the sweep.
    return create_engine(
        settings.database_url,
        pool_size=2,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args=_connect_args(settings, application_name),
    )
