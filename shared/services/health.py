"""Dependency checks for /ready (readiness); /health (liveness) checks nothing."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.domain.errors import DependencyUnavailable
from shared.infra.database import Database

DATABASE_CHECK_TIMEOUT_S = 2
# Redis answers a PING in microseconds; one that takes longer than this is as good as down for
# the API, and a health probe (often given 1 s) must get its answer either way.
REDIS_CHECK_TIMEOUT_S = 0.5


async def _database_ok(db: Database) -> bool:
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_S):
            await db.ping()
    except (DependencyUnavailable, TimeoutError):
        return False
    return True


async def _redis_ok(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(REDIS_CHECK_TIMEOUT_S):
            await redis.ping()
    except (RedisError, OSError, TimeoutError):
        return False
    return True


async def check_dependencies(db: Database, redis: Redis) -> dict[str, bool]:
    database, broker = await asyncio.gather(_database_ok(db), _redis_ok(redis))
    return {"database": database, "redis": broker}
