"""Who is acting: API keys, their scopes, rate limits, and what each may see and do.

Pure. The API resolves the caller from its key once per request; services receive the `Actor`
and ask it, so authorization lives here and in the services, never in a route.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import Forbidden, InvalidInput, MayNotActFor

# Secret scanners recognise a fixed prefix; 32 random bytes is 256 bits.
SECRET_PREFIX = "mlk_"
SECRET_BYTES = 32
MAX_KEY_NAME_LENGTH = 64
_RATE_LIMIT = re.compile(r"^([1-9][0-9]{0,8})/(second|minute)$", re.ASCII)
_SECRET = re.compile(r"^mlk_[A-Za-z0-9_-]{43}$", re.ASCII)


class Scope(StrEnum):
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `requests` per `period` ("second" or "minute")."""

    requests: int
    period: str

    def __str__(self) -> str:
        return f"{self.requests}/{self.period}"


def parse_rate_limit(value: object) -> RateLimit:
    match = _RATE_LIMIT.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput('Rate limit must be "<n>/second" or "<n>/minute"')
    return RateLimit(int(match.group(1)), match.group(2))


def parse_key_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_KEY_NAME_LENGTH
        or not value.isprintable()
    ):
        raise InvalidInput(f"Key name must be 1 to {MAX_KEY_NAME_LENGTH} printable characters")
    return value


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret: enough for 256 random bits (no dictionary to guess from), and one
    indexed lookup per request, where a password hash (bcrypt, argon2) would cost ~100 ms."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_secret(value: str) -> bool:
    return _SECRET.match(value) is not None


@dataclass(frozen=True, slots=True)
class Actor:
    """The owner of the API key a request carries: an admin, or one merchant."""

    key_id: UUID | None  # None: the operator at the command line (`mini-ledger keys ...`)
    merchant_id: UUID | None
    merchant_name: str | None
    scope: Scope
    rate_limit: RateLimit | None

    @property
    def is_admin(self) -> bool:
        return self.merchant_id is None

    @property
    def idempotency_scope(self) -> UUID | None:
        """Keys of one merchant share a scope; admin keys share the platform's (None)."""
        return self.merchant_id

    def sees_merchant(self, merchant_id: UUID) -> bool:
        return self.is_admin or merchant_id == self.merchant_id

    def sees_transfer(self, sender_id: UUID | None, receiver_id: UUID | None) -> bool:
        return self.is_admin or self.merchant_id in (sender_id, receiver_id)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden()

    def require_write(self) -> None:
        if self.scope is not Scope.WRITE:
            raise Forbidden()

    def require_acting_for(self, merchant_name: str) -> None:
        """A merchant key writes only for its own merchant (an admin key for anyone)."""
        self.require_write()
        if not self.is_admin and merchant_name != self.merchant_name:
            raise MayNotActFor(merchant_name)


OPERATOR = Actor(
    key_id=None, merchant_id=None, merchant_name=None, scope=Scope.WRITE, rate_limit=None
)
