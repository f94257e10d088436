"""Who is calling, checked before anything else reads the request.

A pure ASGI middleware, outside the body limit and the routes: a missing or bad key is 401 even
for a body too large or a path that does not exist, and a refused request is never read further,
so it records nothing. It resolves the key (cached per process for less than a second, so a
revocation reaches every process within one), refuses writes with a read-only key, counts the
request against the key's rate limit in Redis (shared by every API process), and leaves the
`Actor` in the request state for the services.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from shared.domain.access import Actor, RateLimit, parse_rate_limit
from shared.domain.errors import LedgerError, RateLimited, Unauthenticated
from shared.infra.config import Settings

log = structlog.get_logger(__name__)

# Below a second: a revoked key is refused by every process within one.
KEY_CACHE_TTL_S = 0.5
KEY_CACHE_MAX_ENTRIES = 10_000
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# SPEC's open paths: what probes, scrapers and a first-time reader of the docs need.
PUBLIC_PATHS = frozenset(
    {
        *("/health", "/ready", "/metrics", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"),
        # Swagger UI's own assets, served by the API (`api/docs.py`): `/docs` works offline.
        *("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"),
        "/docs/assets/favicon.png",
    }
)
# The operator console checks its own session cookie (an admin key's), not a bearer header.
CONSOLE_PREFIX = "/console"

Authenticate = Callable[[str], Awaitable[Actor]]
T = TypeVar("T")


class KeyCache:
    """Resolved keys, and refused secrets, for a short time: one database read per key per TTL.

    Two bounded caches, least recently used out first: a flood of made-up secrets fills only
    the refusals' and never pushes a live key out.
    """

    def __init__(self, authenticate: Authenticate) -> None:
        self._authenticate = authenticate
        self._live: OrderedDict[str, tuple[float, Actor]] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()

    async def resolve(self, secret: str) -> Actor:
        now = time.monotonic()
        if (live := self._live.get(secret)) is not None and live[0] >= now:
            self._live.move_to_end(secret)
            return live[1]
        if (refused_until := self._refused.get(secret)) is not None and refused_until >= now:
            raise Unauthenticated()
        try:
            actor = await self._authenticate(secret)
        except Unauthenticated:
            _remember(self._refused, secret, now + KEY_CACHE_TTL_S)
            raise
        self._refused.pop(secret, None)
        _remember(self._live, secret, (now + KEY_CACHE_TTL_S, actor))
        return actor


def _remember(cache: OrderedDict[str, T], key: str, value: T) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > KEY_CACHE_MAX_ENTRIES:
        cache.popitem(last=False)


def limiter_storage_uri(settings: Settings) -> str:
    """The Redis URL in the form `limits` expects (its own scheme for Unix sockets)."""
    url = settings.redis_url
    return f"async+redis+{url}" if url.startswith("unix:") else f"async+{url}"


class RateLimiter:
    """Per-key fixed windows in Redis; a Redis that does not answer refuses nobody."""

    def __init__(self, settings: Settings) -> None:
        storage = RedisStorage(
            limiter_storage_uri(settings),
            implementation="redispy",
            key_prefix="mini-ledger:rate",
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        self._limiter = FixedWindowRateLimiter(storage)
        self._merchant_default = _item(parse_rate_limit(settings.rate_limit_merchant))
        self._admin_default = (
            None
            if not settings.rate_limit_admin
            else _item(parse_rate_limit(settings.rate_limit_admin))
        )

    def limit_for(self, actor: Actor) -> RateLimitItem | None:
        if actor.rate_limit is not None:
            return _item(actor.rate_limit)
        return self._admin_default if actor.is_admin else self._merchant_default

    async def check(self, actor: Actor) -> None:
        """Count one request; RateLimited (with the seconds to wait) when over the limit."""
        item = self.limit_for(actor)
        if item is None:
            return
        key = str(actor.key_id)
        try:
            if await self._limiter.hit(item, key):
                return
            reset_at, _ = await self._limiter.get_window_stats(item, key)
        except Exception as error:  # Redis down or slow: rate limits are not worth an outage.
            log.warning("rate limit not checked", error=str(error))
            return
        raise RateLimited(max(1, math.ceil(reset_at - time.time())))


def _item(limit: RateLimit) -> RateLimitItem:
    per = RateLimitItemPerSecond if limit.period == "second" else RateLimitItemPerMinute
    return per(limit.requests)


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or _is_console(path):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            actor = await state.key_cache.resolve(_bearer_secret(scope))
            if scope["method"] not in READ_METHODS:
                actor.require_write()
            await state.rate_limiter.check(actor)
        except LedgerError as refusal:  # 401, 403, 429, or 503 if the database is down
            await error_response(refusal)(scope, receive, send)
            return
        scope.setdefault("state", {})["actor"] = actor
        await self.app(scope, receive, send)


def _is_console(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/")


def _bearer_secret(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and secret.strip():
                return str(secret.strip())
            break
    raise Unauthenticated()
