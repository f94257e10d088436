"""Statement reads (async): a merchant's balance, its window pinned as versions, its entries.

Every read walks the journal through its unique index `(account_id, account_version)`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.columns import is_any
from shared.db.tables import accounts, entries, merchants, transfers
from shared.domain.statements import EntryKind, StatementAccount, StatementEntry

# The last version of the account posted before each moment (0: none), by binary search over
# versions 1..:version: posting times grow with versions (entries are stamped under the
# account's row lock), so about log2(versions) probes of the unique index find it, however long
# the account's history. Invariant of each row: versions up to `low` were posted before the
# moment, versions after `high` at or after it; the search ends when they meet.
_LAST_VERSIONS_BEFORE = text(
    """
    WITH RECURSIVE search (position, moment, low, high) AS (
        SELECT position, moment, CAST(0 AS bigint), CAST(:version AS bigint)
        FROM unnest(CAST(:moments AS timestamptz[])) WITH ORDINALITY AS m (moment, position)
        UNION ALL
        SELECT s.position, s.moment,
               CASE WHEN e.created < s.moment THEN e.account_version ELSE s.low END,
               CASE WHEN e.created < s.moment THEN s.high ELSE e.account_version - 1 END
        FROM search s
        JOIN entries e
          ON e.account_id = :account_id AND e.account_version = (s.low + s.high + 1) / 2
        WHERE s.low < s.high
    )
    SELECT position, min(high) AS version FROM search GROUP BY position ORDER BY position
    """
)


class StatementRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get_account(self, merchant_name: str, currency: str) -> StatementAccount | None:
        """The merchant, with its balance in `currency` (no account id if it has none); None
        when no merchant has that name."""
        statement = (
            select(merchants.c.id, accounts.c.id.label("account_id"), accounts.c.version)
            .select_from(
                merchants.outerjoin(
                    accounts,
                    and_(
                        accounts.c.merchant_id == merchants.c.id,
                        accounts.c.kind == "merchant",
                        accounts.c.currency == currency,
                    ),
                )
            )
            .where(merchants.c.name == merchant_name)
        )
        row = (await self._connection.execute(statement)).one_or_none()
        if row is None:
            return None
        return StatementAccount(row.id, row.account_id, row.version or 0)

    async def last_versions_before(
        self, account_id: uuid.UUID, version: int, moments: list[datetime]
    ) -> list[int]:
        """For each moment, the account's last version posted before it (0 if none), among
        versions up to `version`."""
        if not moments:
            return []
        result = await self._connection.execute(
            _LAST_VERSIONS_BEFORE,
            {"account_id": account_id, "version": version, "moments": moments},
        )
        return [int(row.version) for row in result]

    async def balances_at(self, account_id: uuid.UUID, versions: set[int]) -> dict[int, Decimal]:
        """The balance after each of the account's `versions` that exist (0 after version 0)."""
        wanted = sorted(versions - {0})
        statement = select(entries.c.account_version, entries.c.balance_after).where(
            entries.c.account_id == account_id,
            is_any(entries.c.account_version, wanted, BigInteger()),
        )
        found = {0: Decimal(0)} if 0 in versions else {}
        if wanted:
            for row in await self._connection.execute(statement):
                found[row.account_version] = row.balance_after
        return found

    async def list_entries(
        self, account_id: uuid.UUID, after: int, up_to: int, limit: int
    ) -> list[StatementEntry]:
        """The account's entries after version `after` up to version `up_to`, oldest first."""
        statement = (
            select(
                entries.c.account_version,
                entries.c.transfer_id,
                func.coalesce(transfers.c.kind, EntryKind.INITIAL.value).label("kind"),
                entries.c.amount,
                entries.c.balance_after,
                entries.c.created,
            )
            .select_from(entries.outerjoin(transfers, transfers.c.id == entries.c.transfer_id))
            .where(
                entries.c.account_id == account_id,
                entries.c.account_version > after,
                entries.c.account_version <= up_to,
            )
            .order_by(entries.c.account_version)
            .limit(limit)
        )
        return [
            StatementEntry(
                version=row.account_version,
                transfer_id=row.transfer_id,
                kind=EntryKind(row.kind),
                amount=row.amount,
                balance_after=row.balance_after,
                posted=row.created,
            )
            for row in await self._connection.execute(statement)
        ]
