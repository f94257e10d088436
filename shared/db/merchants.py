"""Merchant and balance reads and writes for the API (async)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import accounts, merchants
from shared.domain.errors import BalanceAlreadyExists, DuplicateMerchant
from shared.domain.merchants import Balance, Merchant

_BALANCE_COLUMNS = (accounts.c.id, accounts.c.merchant_id, accounts.c.currency, accounts.c.amount)

# Opening a balance with money in it is a deposit: the money comes from the currency's
# issuance account, so the journal still balances. One statement, all or nothing.
_OPEN_BALANCE = text(
    """
    WITH opened AS (
        INSERT INTO accounts (id, kind, merchant_id, currency, amount, version)
        VALUES (:id, 'merchant', :merchant_id, :currency, :amount,
                CASE WHEN :amount > 0 THEN 1 ELSE 0 END)
        ON CONFLICT (merchant_id, currency) WHERE kind = 'merchant' DO NOTHING
        RETURNING id, amount, version
    ), issued AS (
        INSERT INTO accounts (id, kind, currency, amount, version)
        SELECT :issuance_id, 'issuance', :currency, -:amount, 1 FROM opened WHERE :amount > 0
        ON CONFLICT (currency) WHERE kind = 'issuance' DO UPDATE
            SET amount = accounts.amount + EXCLUDED.amount, version = accounts.version + 1
        RETURNING id, amount, version
    ), journal AS (
        INSERT INTO entries (movement_id, account_id, amount, balance_after, account_version)
        SELECT :movement_id, id, amount, amount, version FROM opened WHERE :amount > 0
        UNION ALL
        SELECT :movement_id, id, -:amount, amount, version FROM issued
    )
    SELECT id FROM opened
    """
)


def _merchant(row: Any) -> Merchant:
    return Merchant(
        id=row.id,
        name=row.name,
        percent_fee=row.percent_fee,
        created=row.created,
        updated=row.updated,
        archived=row.archived,
    )


def _balance(row: Any) -> Balance:
    return Balance(id=row.id, merchant_id=row.merchant_id, currency=row.currency, amount=row.amount)


class MerchantRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def insert(self, name: str, percent_fee: Decimal) -> Merchant:
        statement = (
            merchants.insert()
            .values(id=uuid.uuid4(), name=name, percent_fee=percent_fee)
            .returning(*merchants.c)
        )
        try:
            async with self._connection.begin_nested():
                row = (await self._connection.execute(statement)).one()
        except IntegrityError as error:
            if "uq_merchants_name" in str(error.orig):
                raise DuplicateMerchant(name) from error
            raise
        return _merchant(row)

    async def get_by_name(self, name: str) -> Merchant | None:
        statement = select(*merchants.c).where(merchants.c.name == name)
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else _merchant(row)

    async def update(
        self, name: str, percent_fee: Decimal | None, archived: bool | None
    ) -> Merchant | None:
        """Change what is given (None: keep it); `updated` moves only if something changed.

        A transfer snapshots its fee at submission, so a new fee applies to later ones only.
        """
        fee = merchants.c.percent_fee if percent_fee is None else percent_fee
        flag = merchants.c.archived if archived is None else archived
        changed = (merchants.c.percent_fee != fee) | (merchants.c.archived != flag)
        statement = (
            merchants.update()
            .where(merchants.c.name == name)
            .values(
                percent_fee=fee,
                archived=flag,
                updated=case((changed, func.clock_timestamp()), else_=merchants.c.updated),
            )
            .returning(*merchants.c)
        )
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else _merchant(row)

    async def get_by_id(self, merchant_id: uuid.UUID) -> Merchant | None:
        statement = select(*merchants.c).where(merchants.c.id == merchant_id)
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else _merchant(row)

    async def list_balances(self, merchant_id: uuid.UUID) -> list[Balance]:
        statement = (
            select(*_BALANCE_COLUMNS)
            .where(accounts.c.kind == "merchant", accounts.c.merchant_id == merchant_id)
            .order_by(accounts.c.currency)
        )
        return [_balance(row) for row in await self._connection.execute(statement)]

    async def open_balance(
        self, merchant_id: uuid.UUID, currency: str, initial_amount: Decimal
    ) -> Balance:
        """Create the merchant's balance in `currency`, depositing `initial_amount` into it."""
        balance_id = uuid.uuid4()
        row = (
            await self._connection.execute(
                _OPEN_BALANCE,
                {
                    "id": balance_id,
                    "merchant_id": merchant_id,
                    "currency": currency,
                    "amount": initial_amount,
                    "issuance_id": uuid.uuid4(),
                    "movement_id": uuid.uuid4(),
                },
            )
        ).one_or_none()
        if row is None:
            raise BalanceAlreadyExists(currency)
        return Balance(
            id=balance_id, merchant_id=merchant_id, currency=currency, amount=initial_amount
        )
