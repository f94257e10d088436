"""API keys (async): create, look up by secret hash, list, revoke."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import api_keys, merchants
from shared.domain.access import Actor, RateLimit, Scope, parse_rate_limit
from shared.domain.api_keys import ApiKey

_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.merchant_id,
    merchants.c.name.label("merchant_name"),
    api_keys.c.scope,
    api_keys.c.rate_limit,
    api_keys.c.created,
    api_keys.c.revoked,
)
_WITH_MERCHANT = api_keys.outerjoin(merchants, merchants.c.id == api_keys.c.merchant_id)


def _rate_limit(value: str | None) -> RateLimit | None:
    return None if value is None else parse_rate_limit(value)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        merchant_id=row.merchant_id,
        merchant_name=row.merchant_name,
        scope=Scope(row.scope),
        rate_limit=_rate_limit(row.rate_limit),
        created=row.created,
        revoked=row.revoked,
    )


class ApiKeyRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def insert(
        self,
        name: str,
        merchant_id: uuid.UUID | None,
        scope: Scope,
        rate_limit: RateLimit | None,
        secret_hash: str,
    ) -> uuid.UUID:
        key_id = uuid.uuid4()
        await self._connection.execute(
            api_keys.insert().values(
                id=key_id,
                name=name,
                merchant_id=merchant_id,
                scope=scope.value,
                rate_limit=None if rate_limit is None else str(rate_limit),
                secret_hash=secret_hash,
            )
        )
        return key_id

    async def get(self, key_id: uuid.UUID) -> ApiKey | None:
        statement = select(*_KEY_COLUMNS).select_from(_WITH_MERCHANT).where(api_keys.c.id == key_id)
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else _api_key(row)

    async def list(self) -> list[ApiKey]:
        statement = (
            select(*_KEY_COLUMNS)
            .select_from(_WITH_MERCHANT)
            .order_by(api_keys.c.created, api_keys.c.id)
        )
        return [_api_key(row) for row in await self._connection.execute(statement)]

    async def get_actor(self, secret_hash: str) -> Actor | None:
        """The owner of a live (unrevoked) key with this secret hash; one indexed read."""
        statement = (
            select(*_KEY_COLUMNS)
            .select_from(_WITH_MERCHANT)
            .where(api_keys.c.secret_hash == secret_hash, api_keys.c.revoked.is_(None))
        )
        row = (await self._connection.execute(statement)).one_or_none()
        if row is None:
            return None
        return Actor(
            key_id=row.id,
            merchant_id=row.merchant_id,
            merchant_name=row.merchant_name,
            scope=Scope(row.scope),
            rate_limit=_rate_limit(row.rate_limit),
        )

    async def revoke(self, key_id: uuid.UUID) -> None:
        """Revoke the key (again: a no-op keeping the first revocation time)."""
        await self._connection.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
            .values(revoked=func.clock_timestamp())
        )
