""" "This transfer is final" notices over Redis pub/sub, so `Prefer: wait` answers promptly.

A notice is only a hint: whoever waits re-reads the transfer from the database, and polls it
anyway at a slow pace, so a lost notice (or a Redis outage) costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import structlog
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

FINAL_STATE_CHANNEL = "mini-ledger:transfer-final"
RECONNECT_DELAY_S = 1.0


def announce_final(redis: Redis, transfer_ids: list[uuid.UUID]) -> None:
    """One notice for a whole group: every API process reads every notice, so fewer is cheaper."""
    if not transfer_ids:
        return
    try:
        redis.publish(FINAL_STATE_CHANNEL, ",".join(str(i) for i in transfer_ids))
    except RedisError as error:
        log.warning("final-state notice not sent", error=str(error))


class FinalStateWaiter:
    """One subscription per API process; requests wait on futures keyed by transfer id."""

    def __init__(self, redis: AsyncRedis) -> None:
        self._redis = redis
        self._waiting: dict[uuid.UUID, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="final-state-waiter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def expect(self, transfer_id: uuid.UUID) -> Iterator[asyncio.Future[None]]:
        """A future that completes when a notice for the transfer arrives.

        Register before reading the transfer's state, so a notice sent in between is not missed.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(transfer_id, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._waiting.get(transfer_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiting[transfer_id]

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(FINAL_STATE_CHANNEL)
                    async for message in pubsub.listen():
                        self._wake(message["data"])
            except (RedisError, OSError) as error:
                log.warning("final-state subscription lost", error=str(error))
                await asyncio.sleep(RECONNECT_DELAY_S)

    def _wake(self, data: bytes | str) -> None:
        if not self._waiting:
            return
        for text in (data.decode() if isinstance(data, bytes) else data).split(","):
            try:
                transfer_id = uuid.UUID(text)
            except ValueError:
                continue
            for future in self._waiting.pop(transfer_id, set()):
                if not future.done():
                    future.set_result(None)
