"""Dependency checks for /health."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.db.database import Database
from shared.domain.errors import DependencyUnavailable

CHECK_TIMEOUT_S = 2


async def _database_ok(db: Database) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await db.ping()
    except (DependencyUnavailable, TimeoutError):
        return False
    return True


async def _redis_ok(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await redis.ping()
    except (RedisError, OSError, TimeoutError):
        return False
    return True


async def check_dependencies(db: Database, redis: Redis) -> dict[str, bool]:
    database, broker = await asyncio.gather(_database_ok(db), _redis_ok(redis))
    return {"database": database, "redis": broker}
