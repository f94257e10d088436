"""Redis locks on balances: token-owned, expiring, taken in sorted order with a bounded wait.

They keep workers from piling onto the same balance; they are not what keeps money correct.
The database's row locks and constraints are, so a lock that expires mid-transfer, or a Redis
that is down, costs contention, never correctness.

All the locks a transfer needs are taken in one atomic step (a Lua script walks the sorted
names and sets them only if none is held), so a holder never waits while holding: no deadlock,
and one round trip to acquire and one to release, however many balances.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import structlog
from redis import Redis
from redis.exceptions import RedisError

from shared.infra.retry import Backoff

log = structlog.get_logger(__name__)

# Sets every key to the token, with an expiry, if and only if none of them exists.
_ACQUIRE_ALL = """
for _, name in ipairs(KEYS) do
    if redis.call('exists', name) == 1 then return 0 end
end
for _, name in ipairs(KEYS) do
    redis.call('set', name, ARGV[1], 'PX', ARGV[2])
end
return 1
"""
# Deletes only the keys that still hold our token: an expired lock may be someone else's now.
_RELEASE_OWN = """
local released = 0
for _, name in ipairs(KEYS) do
    if redis.call('get', name) == ARGV[1] then
        redis.call('del', name)
        released = released + 1
    end
end
return released
"""
# Between tries for busy locks: 5 ms at first, never more than 50 ms.
LOCK_POLL = Backoff(first_s=0.005, cap_s=0.05)


def balance_lock_name(merchant_id: uuid.UUID, currency: str) -> str:
    return f"mini-ledger:lock:balance:{merchant_id}:{currency}"


def lock_order(names: list[str]) -> list[str]:
    """Every holder takes its locks in one global order."""
    return sorted(set(names))


class Hold(StrEnum):
    HELD = "held"  # every lock is ours until the block ends
    BUSY = "busy"  # one stayed busy for `wait_s`: none is held
    UNAVAILABLE = "unavailable"  # Redis did not answer: none is held (row locks still guard)


class Locker:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE_ALL)
        self._release = redis.register_script(_RELEASE_OWN)

    @contextmanager
    def hold_all(self, names: list[str], *, ttl_s: float, wait_s: float) -> Iterator[Hold]:
        """Take every lock at once, waiting at most `wait_s`; yield what came of it.

        Each lock expires `ttl_s` after it was taken, so a crashed holder blocks nobody longer.
        """
        ordered = lock_order(names)
        token = uuid.uuid4().hex
        try:
            acquired = self._acquire_within(ordered, token, ttl_s, wait_s)
        except RedisError as error:
            log.warning("balance locks unavailable", error=str(error))
            yield Hold.UNAVAILABLE
            return
        if not acquired:
            yield Hold.BUSY
            return
        try:
            yield Hold.HELD
        finally:
            self._release_own(ordered, token)

    def _acquire_within(self, names: list[str], token: str, ttl_s: float, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        attempt = 0
        while True:
            if self._acquire(keys=names, args=[token, int(ttl_s * 1000)]):
                return True
            delay_s = LOCK_POLL.delay_s(attempt)
            if time.monotonic() + delay_s > deadline:
                return False
            time.sleep(delay_s)
            attempt += 1

    def _release_own(self, names: list[str], token: str) -> None:
        try:
            released = self._release(keys=names, args=[token])
        except RedisError as error:
            log.warning("balance lock release failed", error=str(error))
            return
        if released != len(names):
            log.warning("balance lock expired before release", locks=names)
