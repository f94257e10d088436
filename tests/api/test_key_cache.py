"""The per-process key cache: short-lived, bounded, and a flood of bad secrets evicts no key."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from api import auth
from api.auth import KeyCache
from shared.domain.access import Actor, Scope
from shared.domain.errors import Unauthenticated

pytestmark = pytest.mark.unit

ACTOR = Actor(uuid.uuid4(), None, None, Scope.WRITE, None)


class Directory:
    """Stands in for the key table: which secrets are live, and how often it was asked."""

    def __init__(self, live: set[str]) -> None:
        self.live = live
        self.lookups = 0

    async def authenticate(self, secret: str) -> Actor:
        self.lookups += 1
        if secret not in self.live:
            raise Unauthenticated()
        return ACTOR


async def test_a_key_is_looked_up_once_per_ttl() -> None:
    directory = Directory({"good"})
    cache = KeyCache(directory.authenticate)
    assert [await cache.resolve("good") for _ in range(5)] == [ACTOR] * 5
    assert directory.lookups == 1


async def test_a_revocation_is_seen_once_the_ttl_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_TTL_S", 0.05)
    directory = Directory({"good"})
    cache = KeyCache(directory.authenticate)
    await cache.resolve("good")
    directory.live.clear()
    await asyncio.sleep(0.06)
    with pytest.raises(Unauthenticated):
        await cache.resolve("good")


async def test_a_flood_of_bad_secrets_never_evicts_a_live_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_MAX_ENTRIES", 10)
    directory = Directory({"good"})
    cache = KeyCache(directory.authenticate)
    await cache.resolve("good")
    for index in range(100):
        with pytest.raises(Unauthenticated):
            await cache.resolve(f"bad-{index}")
    lookups = directory.lookups
    assert await cache.resolve("good") is ACTOR
    assert directory.lookups == lookups  # still cached
