"""Redis locks on balances: token-owned, expiring, acquired in sorted order with a bounded wait.

They keep workers from piling onto the same balance; they are not what keeps money correct.
The database's row locks and constraints are, so a lock that expires mid-transfer, or a Redis
that is down, costs contention, never correctness.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import structlog
from redis import Redis
from redis.exceptions import LockError, RedisError

log = structlog.get_logger(__name__)


def balance_lock_name(merchant_id: uuid.UUID, currency: str) -> str:
    return f"mini-ledger:lock:balance:{merchant_id}:{currency}"


def lock_order(names: list[str]) -> list[str]:
    """Every holder takes its locks in one global order, so A->B and B->A never deadlock."""
    return sorted(set(names))


class Locker:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @contextmanager
    def hold_all(self, names: list[str], *, timeout_s: float, wait_s: float) -> Iterator[bool]:
        """Yield True holding every lock, or False (holding none) if one stayed busy for `wait_s`.

        Each lock expires after `timeout_s`, so a crashed holder blocks nobody for longer.
        """
        with ExitStack() as held:
            for name in lock_order(names):
                lock = self._redis.lock(
                    name, timeout=timeout_s, blocking_timeout=wait_s, thread_local=False
                )
                try:
                    acquired = lock.acquire(token=uuid.uuid4().hex)
                except RedisError as error:
                    # Row locks still serialise the balances; carry on without this lock.
                    log.warning("balance lock unavailable", lock=name, error=str(error))
                    continue
                if not acquired:
                    yield False
                    return
                held.callback(_release, lock, name)
            yield True


def _release(lock: object, name: str) -> None:
    try:
        lock.release()  # type: ignore[attr-defined]
    except LockError:
        # It expired and may belong to someone else now: releasing only our own token is the point.
        log.warning("balance lock expired before release", lock=name)
    except RedisError as error:
        log.warning("balance lock release failed", lock=name, error=str(error))
