"""Merchant and balance reads and writes for the API (async)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, null, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.limits import LIMITS_OF_MERCHANT, to_limit_usage
from shared.db.tables import balance_limits, merchants
from shared.domain.errors import BalanceAlreadyExists, DuplicateMerchant
from shared.domain.fee_tiers import FeeTier
from shared.domain.limits import BalanceLimit, LimitUsage, month_start
from shared.domain.merchants import Balance, Merchant, MerchantChanges, MerchantWithBalances
from shared.domain.money import format_amount, format_percent

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


# The merchant and its balances, one row per balance (one with NULLs for none), and whether it
# has any limits: the read the API serves most, as one statement written once.
_MERCHANT_WITH_BALANCES = text(
    """
    SELECT m.id, m.name, m.percent_fee, m.created, m.updated, m.archived, m.fee_tiers,
           b.id AS balance_id, b.currency, b.amount,
           EXISTS (SELECT FROM balance_limits l WHERE l.merchant_id = m.id) AS has_limits
    FROM merchants m
    LEFT JOIN accounts b ON b.merchant_id = m.id AND b.kind = 'merchant'
    WHERE m.name = :name
    ORDER BY b.currency
    """
)


def to_merchant(row: Any) -> Merchant:
    return Merchant(
        id=row.id,
        name=row.name,
        percent_fee=row.percent_fee,
        created=row.created,
        updated=row.updated,
        archived=row.archived,
        fee_tiers=to_fee_tiers(row.fee_tiers),
    )


def to_fee_tiers(stored: list[dict[str, str]] | None) -> tuple[FeeTier, ...] | None:
    """Tiers as `merchants.fee_tiers` holds them (decimal strings: exact in JSON)."""
    if stored is None:
        return None
    return tuple(FeeTier(Decimal(t["from_volume"]), Decimal(t["percent_fee"])) for t in stored)


def _stored_fee_tiers(tiers: Sequence[FeeTier] | None) -> list[dict[str, str]] | None:
    if tiers is None:
        return None
    return [
        {"from_volume": format_amount(t.from_volume), "percent_fee": format_percent(t.percent_fee)}
        for t in tiers
    ]


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
        return to_merchant(row)

    async def get_with_balances(self, name: str, today: date) -> MerchantWithBalances | None:
        """The merchant with its balances and limits (with their use in the UTC periods `today`
        is in): one statement, and a second only for a merchant that has limits."""
        rows = (await self._connection.execute(_MERCHANT_WITH_BALANCES, {"name": name})).all()
        if not rows:
            return None
        merchant = to_merchant(rows[0])
        balances = [
            Balance(row.balance_id, merchant.id, row.currency, row.amount)
            for row in rows
            if row.balance_id is not None
        ]
        limits = await self.list_limits(merchant.id, today) if rows[0].has_limits else []
        return MerchantWithBalances(merchant, balances, limits)

    async def get_by_name(self, name: str) -> Merchant | None:
        statement = select(*merchants.c).where(merchants.c.name == name)
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else to_merchant(row)

    async def update(self, name: str, changes: MerchantChanges) -> Merchant | None:
        """Change what is given (None: keep it); `updated` moves only if something changed.
        Limits are replaced as a whole (run it in a transaction).

        A transfer snapshots its fee at submission, so a new fee or new tiers apply to later
        ones only; the worker reads limits under the balance locks, so new limits apply to
        every movement completed after the commit.
        """
        limits_changed = False
        if changes.limits is not None:
            found = await self._connection.execute(
                # NO KEY: transfers and running totals referencing the merchant need not wait.
                select(merchants.c.id)
                .where(merchants.c.name == name)
                .with_for_update(key_share=True)
            )
            merchant_id = found.scalar_one_or_none()
            if merchant_id is None:
                return None
            limits_changed = await self._replace_limits(merchant_id, changes.limits)
        fee = merchants.c.percent_fee if changes.percent_fee is None else changes.percent_fee
        flag = merchants.c.archived if changes.archived is None else changes.archived
        tiers: Any = merchants.c.fee_tiers
        if changes.fee_tiers is not None:
            new_tiers = _stored_fee_tiers(changes.fee_tiers.tiers)
            # SQL NULL, not JSON's null, for "no tiers".
            tiers = null() if new_tiers is None else literal(new_tiers, merchants.c.fee_tiers.type)
        changed = (
            (merchants.c.percent_fee != fee)
            | (merchants.c.archived != flag)
            | merchants.c.fee_tiers.is_distinct_from(tiers)
            | limits_changed
        )
        statement = (
            merchants.update()
            .where(merchants.c.name == name)
            .values(
                percent_fee=fee,
                archived=flag,
                fee_tiers=tiers,
                updated=case((changed, func.clock_timestamp()), else_=merchants.c.updated),
            )
            .returning(*merchants.c)
        )
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else to_merchant(row)

    async def _replace_limits(self, merchant_id: uuid.UUID, limits: Sequence[BalanceLimit]) -> bool:
        """Make `limits` the merchant's; whether that changed them."""
        removed = await self._connection.execute(
            delete(balance_limits)
            .where(balance_limits.c.merchant_id == merchant_id)
            .returning(
                balance_limits.c.currency, balance_limits.c.period, balance_limits.c.max_amount
            )
        )
        before = {(row.currency, row.period, row.max_amount) for row in removed}
        if limits:
            await self._connection.execute(
                insert(balance_limits),
                [
                    {
                        "merchant_id": merchant_id,
                        "currency": limit.currency,
                        "period": limit.period.value,
                        "max_amount": limit.max_amount,
                    }
                    for limit in limits
                ],
            )
        return before != {
            (limit.currency, limit.period.value, limit.max_amount) for limit in limits
        }

    async def list_limits(self, merchant_id: uuid.UUID, today: date) -> list[LimitUsage]:
        """The merchant's limits with what each used in the UTC period `today` is in."""
        rows = await self._connection.execute(
            LIMITS_OF_MERCHANT,
            {"merchant_id": merchant_id, "today": today, "month_start": month_start(today)},
        )
        return [to_limit_usage(row) for row in rows]

    async def get_by_id(self, merchant_id: uuid.UUID) -> Merchant | None:
        statement = select(*merchants.c).where(merchants.c.id == merchant_id)
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else to_merchant(row)

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
