"""What an operator alerts on: queue depth and the age of the oldest pending transfer."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.db.transfers import TransferRepository
from shared.domain.access import Actor
from shared.infra.database import Database
from shared.infra.queue import TRANSFERS_QUEUE


@dataclass(frozen=True, slots=True)
class QueueStatus:
    queue_depth: int | None  # messages waiting in the broker; None if Redis did not answer
    pending_transfers: int
    oldest_pending_age_s: float | None


async def queue_status(db: Database, actor: Actor, redis: Redis) -> QueueStatus:
    actor.require_admin()
    async with db.autocommit() as connection:
        pending, oldest_age_s = await TransferRepository(connection).pending_summary()
    try:
        depth: int | None = int(await redis.llen(TRANSFERS_QUEUE))
    except (RedisError, OSError):
        depth = None
    return QueueStatus(depth, pending, oldest_age_s)
