"""Per-process connections of a worker, created on first use (after the prefork fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from redis import Redis

from shared.infra.config import Settings, get_settings
from shared.infra.database import SyncDatabase
from shared.infra.engine import create_worker_engine
from shared.infra.locks import Locker

REDIS_SOCKET_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class WorkerResources:
    settings: Settings
    db: SyncDatabase
    redis: Redis
    locker: Locker


@cache
def resources() -> WorkerResources:
    settings = get_settings()
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
    )
    return WorkerResources(
        settings=settings,
        db=SyncDatabase(create_worker_engine(settings)),
        redis=redis,
        locker=Locker(redis),
    )
