"""An API key as operators manage it (never its secret, which is shown once and not stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from shared.domain.access import RateLimit, Scope


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    name: str
    merchant_id: UUID | None
    merchant_name: str | None
    scope: Scope
    rate_limit: RateLimit | None
    created: datetime
    revoked: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key and its secret: the only time the secret exists outside the client."""

    key: ApiKey
    secret: str
