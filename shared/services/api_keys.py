"""API key use cases: create (secret shown once), list, revoke, and resolving a request's key."""

from __future__ import annotations

import uuid

from shared.db.api_keys import ApiKeyRepository
from shared.db.merchants import MerchantRepository
from shared.domain.access import (
    OPERATOR,
    Actor,
    RateLimit,
    Scope,
    hash_secret,
    looks_like_secret,
    new_secret,
)
from shared.domain.api_keys import ApiKey, CreatedApiKey
from shared.domain.errors import (
    ApiKeyNotFound,
    InvariantViolation,
    MerchantNotFound,
    Unauthenticated,
)
from shared.infra.database import Database


async def create_api_key(
    db: Database,
    actor: Actor,
    name: str,
    merchant_name: str | None,
    scope: Scope,
    rate_limit: RateLimit | None,
) -> CreatedApiKey:
    """A new key for the platform (no merchant) or one merchant; its secret is returned once."""
    actor.require_admin()
    actor.require_write()
    secret = new_secret()
    async with db.transaction() as connection:
        merchant_id = None
        if merchant_name is not None:
            merchant = await MerchantRepository(connection).get_by_name(merchant_name)
            if merchant is None:
                raise MerchantNotFound(merchant_name)
            merchant_id = merchant.id
        repository = ApiKeyRepository(connection)
        key_id = await repository.insert(name, merchant_id, scope, rate_limit, hash_secret(secret))
        key = await repository.get(key_id)
    if key is None:  # Read back in the transaction that wrote it.
        raise InvariantViolation(f"API key {key_id} vanished")
    return CreatedApiKey(key, secret)


async def list_api_keys(db: Database, actor: Actor) -> list[ApiKey]:
    actor.require_admin()
    async with db.autocommit() as connection:
        return await ApiKeyRepository(connection).list()


async def revoke_api_key(db: Database, actor: Actor, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key; every API process refuses it within a second (their caches expire)."""
    actor.require_admin()
    actor.require_write()
    async with db.transaction() as connection:
        repository = ApiKeyRepository(connection)
        await repository.revoke(key_id)
        key = await repository.get(key_id)
    if key is None:
        raise ApiKeyNotFound(str(key_id))
    return key


async def authenticate(db: Database, secret: str) -> Actor:
    """The owner of a live key with this secret, or Unauthenticated."""
    if not looks_like_secret(secret):
        raise Unauthenticated()
    async with db.autocommit() as connection:
        actor = await ApiKeyRepository(connection).get_actor(hash_secret(secret))
    if actor is None:
        raise Unauthenticated()
    return actor


async def ensure_admin_key(db: Database, secret: str | None) -> CreatedApiKey | None:
    """Zero-config's admin key: None if `secret` is a live admin key already, else a new one."""
    if secret is not None:
        try:
            if (await authenticate(db, secret)).is_admin:
                return None
        except Unauthenticated:
            pass
    return await create_api_key(db, OPERATOR, "zero-config admin", None, Scope.WRITE, None)
