"""Redis balance locks against a real Redis: order, ownership, expiry, bounded wait."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from shared.infra.config import load_settings
from shared.infra.locks import Hold, Locker, balance_lock_name, lock_order


@pytest.fixture
def redis() -> Iterator[Redis]:
    client = Redis.from_url(load_settings().redis_url)
    yield client
    client.close()


def _names(count: int = 2) -> list[str]:
    return [balance_lock_name(uuid.uuid4(), "USD") for _ in range(count)]


class TestLockOrder:
    def test_is_the_same_whatever_the_direction(self) -> None:
        a, b = _names()
        assert lock_order([a, b]) == lock_order([b, a])

    def test_takes_each_lock_once(self) -> None:
        a, _ = _names()
        assert lock_order([a, a]) == [a]


class TestHoldAll:
    def test_holds_every_lock_then_releases(self, redis: Redis) -> None:
        names = _names()
        with Locker(redis).hold_all(names, ttl_s=5, wait_s=0.1) as held:
            assert held is Hold.HELD
            assert all(redis.exists(name) for name in names)
        assert not any(redis.exists(name) for name in names)

    def test_busy_lock_gives_up_after_the_bounded_wait_holding_nothing(self, redis: Redis) -> None:
        first, second = sorted(_names())
        other = Locker(redis)
        with other.hold_all([second], ttl_s=5, wait_s=0.1) as other_held:
            assert other_held is Hold.HELD
            started = time.monotonic()
            with Locker(redis).hold_all([first, second], ttl_s=5, wait_s=0.2) as held:
                assert held is Hold.BUSY
            assert time.monotonic() - started < 5
            assert not redis.exists(first)  # the lock it did get was given back
            assert redis.exists(second)  # and the other holder's lock is untouched

    def test_expired_lock_is_not_released_by_its_old_holder(self, redis: Redis) -> None:
        (name,) = _names(1)
        with Locker(redis).hold_all([name], ttl_s=0.2, wait_s=0.1) as held:
            assert held is Hold.HELD
            time.sleep(0.3)  # expired while "working"
            assert redis.set(name, b"someone-else", px=5000, nx=True)
        assert redis.get(name) == b"someone-else"  # release removed only its own token
        redis.delete(name)


def test_an_unreachable_redis_holds_nothing_and_says_so() -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with Locker(unreachable).hold_all(["a-lock"], ttl_s=5, wait_s=0.1) as hold:
        assert hold is Hold.UNAVAILABLE
