"""Merchant and balance use cases."""

from __future__ import annotations

import uuid
from datetime import UTC
from decimal import Decimal

from shared.db.merchants import MerchantRepository
from shared.domain.access import Actor
from shared.domain.errors import MerchantArchived, MerchantNotFound
from shared.domain.merchants import Balance, Merchant, MerchantChanges, MerchantWithBalances
from shared.infra import clock
from shared.infra.database import Database


async def create_merchant(db: Database, actor: Actor, name: str, percent_fee: Decimal) -> Merchant:
    actor.require_admin()
    async with db.transaction() as connection:
        return await MerchantRepository(connection).insert(name, percent_fee)


async def update_merchant(
    db: Database, actor: Actor, name: str, changes: MerchantChanges
) -> MerchantWithBalances:
    """Change a merchant's fee or fee tiers (for transfers submitted from now on), its limits
    (for movements completed from now on) or its archive flag (admin).

    An archived merchant can neither send nor receive new transfers; its pending ones settle.
    """
    actor.require_admin()
    async with db.transaction() as connection:
        merchant = await MerchantRepository(connection).update(name, changes)
    if merchant is None:
        raise MerchantNotFound(name)
    return await _read(db, name)


async def get_merchant(db: Database, actor: Actor, name: str) -> MerchantWithBalances:
    """The merchant with its balances and limits (with what each used this period); a merchant
    key sees only its own (others do not exist)."""
    if not actor.is_admin and name != actor.merchant_name:
        raise MerchantNotFound(name)
    return await _read(db, name)


async def _read(db: Database, name: str) -> MerchantWithBalances:
    """The merchant with its balances and its limits' use in the current UTC day and month."""
    today = clock.utc_now().astimezone(UTC).date()
    async with db.autocommit() as connection:
        found = await MerchantRepository(connection).get_with_balances(name, today)
    if found is None:
        raise MerchantNotFound(name)
    return found


async def list_balances(db: Database, actor: Actor, name: str) -> list[Balance]:
    return (await get_merchant(db, actor, name)).balances


async def open_balance(
    db: Database, actor: Actor, merchant_id: uuid.UUID, currency: str, initial_amount: Decimal
) -> Balance:
    """Open the merchant's balance in `currency` with `initial_amount` deposited into it."""
    actor.require_admin()
    async with db.transaction() as connection:
        repository = MerchantRepository(connection)
        merchant = await repository.get_by_id(merchant_id)
        if merchant is None:
            raise MerchantNotFound(str(merchant_id))
        if merchant.archived:
            raise MerchantArchived(merchant.name)
        return await repository.open_balance(merchant_id, currency, initial_amount)
