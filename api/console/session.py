"""Console sessions: a signed cookie, a CSRF token per session, and the admin key re-checked on
every request.

- The cookie is `HttpOnly`, `SameSite=Strict`, scoped to `/console` (`Secure` over HTTPS), and
  signed with itsdangerous (what Starlette's own sessions use). It holds the SHA-256 of the admin
  key the operator logged in with, never the key: the hash is no credential anywhere else.
- Every request resolves that hash to the key's owner through a `KeyCache` (the API's, with the
  same sub-second lifetime): a revoked key ends its sessions within a second, on every process.
- The signing secret is made once and kept in Redis (`shared.services.console.session_secret`),
  so every API process on every machine accepts every session, with nothing to configure.
- Every form carries the session's CSRF token; a POST without the right one is refused (403)
  before anything else happens.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from redis.asyncio import Redis
from starlette.responses import Response

from api.auth import KeyCache
from shared.domain.access import Actor
from shared.domain.errors import Unauthenticated
from shared.infra.database import Database
from shared.services.console import authenticate_session, session_secret

COOKIE = "mini_ledger_console"
COOKIE_PATH = "/console"
SESSION_MAX_AGE_S = 8 * 3600
CSRF_FIELD = "csrf_token"
# A signature that fails may be a secret this process has not seen yet: read it again, at most
# this often.
SECRET_REFRESH_S = 5.0
MAX_FORM_FIELDS = 20
_SALT = "mini-ledger.console.session"

Flash = tuple[str, str]  # (level: "ok" | "error", text)


class LoginRequired(Exception):
    """No live session: to the login page (with why, when there is something to say)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "login required")
        self.reason = reason


class CsrfRefused(Exception):
    """A form without this session's CSRF token."""


@dataclass
class Session:
    csrf: str
    key_hash: str | None = None
    logged_in_at: float | None = None
    flashes: list[Flash] = field(default_factory=list)
    changed: bool = False

    @classmethod
    def new(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), changed=True)

    def flash(self, level: str, text: str) -> None:
        self.flashes.append((level, text))
        self.changed = True

    def take_flashes(self) -> list[Flash]:
        taken, self.flashes = self.flashes, []
        if taken:
            self.changed = True
        return taken

    def log_in(self, key_hash: str) -> None:
        """A new CSRF token with every login: nothing from before it carries over."""
        self.key_hash = key_hash
        self.logged_in_at = time.time()
        self.csrf = secrets.token_urlsafe(32)
        self.changed = True

    def log_out(self) -> None:
        self.key_hash = None
        self.logged_in_at = None
        self.csrf = secrets.token_urlsafe(32)
        self.changed = True

    def payload(self) -> dict[str, Any]:
        return {"c": self.csrf, "k": self.key_hash, "t": self.logged_in_at, "f": self.flashes}

    @classmethod
    def from_payload(cls, data: Any) -> Session:
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return cls.new()
        logged_in_at = data.get("t")
        key_hash = data.get("k") if isinstance(data.get("k"), str) else None
        if not isinstance(logged_in_at, int | float) or (
            time.time() - logged_in_at > SESSION_MAX_AGE_S
        ):
            key_hash, logged_in_at = None, None
        flashes = [
            (str(item[0]), str(item[1]))
            for item in data.get("f") or []
            if isinstance(item, list) and len(item) == 2
        ]
        return cls(data["c"], key_hash, logged_in_at, flashes)


class SessionStore:
    """One per API process: the signer and the cache of session keys."""

    def __init__(self, database: Database, redis: Redis) -> None:
        self._redis = redis
        self._keys = KeyCache(lambda key_hash: authenticate_session(database, key_hash))
        self._signer: URLSafeTimedSerializer | None = None
        self._signer_read_at = 0.0

    async def _get_signer(self, refresh: bool = False) -> URLSafeTimedSerializer:
        now = time.monotonic()
        if self._signer is None or (refresh and now - self._signer_read_at > SECRET_REFRESH_S):
            secret = await session_secret(self._redis)
            self._signer = URLSafeTimedSerializer(secret, salt=_SALT)
            self._signer_read_at = now
        return self._signer

    async def load(self, request: Request) -> Session:
        """The request's session, or a new one (not logged in) if it has none that is valid."""
        existing: Session | None = getattr(request.state, "console_session", None)
        if existing is not None:
            return existing
        session = await self._read(request.cookies.get(COOKIE))
        request.state.console_session = session
        return session

    async def _read(self, cookie: str | None) -> Session:
        if not cookie:
            return Session.new()
        for refresh in (False, True):
            signer = await self._get_signer(refresh)
            try:
                return Session.from_payload(signer.loads(cookie, max_age=SESSION_MAX_AGE_S))
            except SignatureExpired:
                return Session.new()
            except BadSignature:
                continue
        return Session.new()

    async def actor(self, session: Session) -> Actor:
        """The owner of the session's key, re-checked (cached for under a second)."""
        if session.key_hash is None:
            raise Unauthenticated()
        return await self._keys.resolve(session.key_hash)

    async def save(self, request: Request, response: Response) -> None:
        """Set the cookie if the session changed during this request."""
        session: Session | None = getattr(request.state, "console_session", None)
        if session is None or not session.changed:
            return
        signer = await self._get_signer()
        response.set_cookie(
            COOKIE,
            signer.dumps(session.payload()),
            max_age=SESSION_MAX_AGE_S,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https"
            or request.app.state.settings.console_cookie_secure,
            httponly=True,
            samesite="strict",
        )


def sessions(request: Request) -> SessionStore:
    """This process's session store (made on first use, from the app's database and Redis)."""
    state = request.app.state
    store: SessionStore | None = getattr(state, "console_sessions", None)
    if store is None:
        store = SessionStore(state.database, state.redis)
        state.console_sessions = store
    return store


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (what every console form sends); anything
    else is an empty form, which no CSRF check passes. The first value of a repeated field."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def check_csrf(session: Session, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get(CSRF_FIELD, "").encode(), session.csrf.encode()):
        raise CsrfRefused()
