"""The `ceiling` scenario's app: only what a submission must do, and nothing else.

    python -m uvicorn bench.ceiling_app:create_app --factory --workers 2 \
        --loop uvloop --http httptools --port 8001

POST /v1/transfers parses the same JSON body and Idempotency-Key header the API takes, inserts
one row with a unique key (durable: the server's own synchronous_commit), pushes one entry on a
Redis list, and answers 202. Same framework (FastAPI), server (uvicorn, uvloop, httptools) and
drivers (psycopg's async pool, redis.asyncio) as the product; no authentication, no ledger, no
queue protocol, no middleware. What the bench's load generator gets from it is the most any
submission path could answer on this machine with these servers (`bench/run.py`, issue #13).

Configured by the environment: CEILING_DATABASE (a libpq conninfo string), CEILING_REDIS_URL,
DB_POOL_SIZE (connections per process, as the API's). `ensure_schema` creates its table.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated

import psycopg
import redis.asyncio as redis
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

SCHEMA = "bench_ceiling"
TABLE = f"{SCHEMA}.submissions"
QUEUE = "bench:ceiling"

INSERT = f"""
INSERT INTO {TABLE} (id, idempotency_key, from_merchant, to_merchant, amount, currency)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""


def ensure_schema(conninfo: str) -> None:
    """The app's own schema and table, empty."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        connection.execute(f"CREATE SCHEMA {SCHEMA}")
        connection.execute(
            f"""
            CREATE TABLE {TABLE} (
                id uuid PRIMARY KEY,
                idempotency_key text NOT NULL UNIQUE,
                from_merchant text NOT NULL,
                to_merchant text NOT NULL,
                amount numeric(38, 18) NOT NULL,
                currency char(3) NOT NULL,
                created timestamptz NOT NULL DEFAULT now()
            )
            """
        )


class TransferIn(BaseModel):
    from_merchant: str = Field(min_length=1, max_length=200)
    to_merchant: str = Field(min_length=1, max_length=200)
    amount: Decimal = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)


def create_app() -> FastAPI:
    conninfo = os.environ["CEILING_DATABASE"]
    redis_url = os.environ["CEILING_REDIS_URL"]
    pool_size = int(os.environ.get("DB_POOL_SIZE", "20"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Autocommit: the insert is its own transaction, committed (durably, as the server's
        # synchronous_commit has it) before the answer; one round trip.
        pool = AsyncConnectionPool(
            conninfo,
            min_size=pool_size,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open(wait=True)
        client = redis.Redis.from_url(redis_url)
        app.state.pool = pool
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose()
            await pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/transfers", status_code=202)
    async def submit(
        transfer: TransferIn,
        request: Request,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=255)],
    ) -> JSONResponse:
        pool: AsyncConnectionPool = request.app.state.pool
        client: redis.Redis = request.app.state.redis
        transfer_id = uuid.uuid4()
        async with pool.connection() as connection:
            cursor = await connection.execute(
                INSERT,
                (
                    transfer_id,
                    idempotency_key,
                    transfer.from_merchant,
                    transfer.to_merchant,
                    transfer.amount,
                    transfer.currency,
                ),
            )
            inserted = await cursor.fetchone()
        if inserted is None:  # a replay: recorded and enqueued the first time
            return JSONResponse({"result": {"idempotency_key": idempotency_key}}, status_code=200)
        await client.lpush(QUEUE, json.dumps({"id": str(transfer_id)}))
        return JSONResponse(
            {"result": {"id": str(transfer_id), "state": "pending"}}, status_code=202
        )

    return app
