"""Transfer reads and the pending inserts of submissions (async, the API's side)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    func,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.columns import TRANSFER_COLUMNS, is_any, to_transfer
from shared.db.merchants import to_fee_tiers
from shared.db.tables import batch_items, merchants, transfers
from shared.domain.submissions import Counterparties, PartiesWanted
from shared.domain.transfers import (
    NewTransfer,
    Party,
    Reversible,
    StoredTransfer,
    Transfer,
    TransferFilter,
    TransferState,
)

_INSERT_PENDING_MANY = text(
    """
    INSERT INTO transfers (id, idempotency_scope, idempotency_key, request_fingerprint, kind,
                           from_merchant_id, to_merchant_id, amount, fee, percent_fee, currency,
                           request_id, reverses, reversed_amount, reversed_fee, to_currency,
                           fx_rate, converted_amount)
    SELECT id, scope, key, fingerprint, kind, sender, receiver, amount, fee, percent_fee,
           currency, request_id, reverses, reversed, reversed, to_currency, fx_rate, converted
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:scopes AS uuid[]), CAST(:keys AS varchar[]),
        CAST(:fingerprints AS varchar[]), CAST(:kinds AS varchar[]),
        CAST(:senders AS uuid[]), CAST(:receivers AS uuid[]), CAST(:amounts AS numeric[]),
        CAST(:fees AS numeric[]), CAST(:percent_fees AS numeric[]),
        CAST(:currencies AS varchar[]), CAST(:request_ids AS varchar[]),
        CAST(:reverses AS uuid[]), CAST(:reversed AS numeric[]),
        CAST(:to_currencies AS varchar[]), CAST(:fx_rates AS numeric[]),
        CAST(:converted AS numeric[])
    ) AS new (id, scope, key, fingerprint, kind, sender, receiver, amount, fee, percent_fee,
              currency, request_id, reverses, reversed, to_currency, fx_rate, converted)
    ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING
    RETURNING id, kind, from_merchant_id, to_merchant_id, amount, fee, percent_fee, currency,
              idempotency_key, state, failure_reason, created, processed, reverses,
              reversed_amount, reversed_fee, to_currency, fx_rate, converted_amount
    """
)


_RATES_OF_PAIRS = text(
    """
    SELECT r.base, r.quote, r.rate
    FROM unnest(CAST(:bases AS varchar[]), CAST(:quotes AS varchar[])) AS wanted (base, quote)
    JOIN fx_rates r ON r.base = wanted.base AND r.quote = wanted.quote
    """
)


def _in_scope(scope: uuid.UUID | None) -> ColumnElement[bool]:
    """The idempotency scope as an indexable condition (the platform's scope is NULL)."""
    column = transfers.c.idempotency_scope
    return column.is_(None) if scope is None else column == scope


def _merchant_id_named(name: str) -> Any:
    return select(merchants.c.id).where(merchants.c.name == name).scalar_subquery()


def list_statement(
    where: TransferFilter, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Select[Any]:
    """Newest first, ties broken by id; keyset pagination from `after` (exclusive)."""
    conditions = []
    if where.sender is not None:
        conditions.append(transfers.c.from_merchant_id == _merchant_id_named(where.sender))
    if where.receiver is not None:
        conditions.append(transfers.c.to_merchant_id == _merchant_id_named(where.receiver))
    if where.currency is not None:
        # Either side: a cross-currency transfer is in both of its currencies.
        conditions.append(
            (transfers.c.currency == where.currency) | (transfers.c.to_currency == where.currency)
        )
    if where.state is not None:
        conditions.append(transfers.c.state == where.state.value)
    if where.kind is not None:
        conditions.append(transfers.c.kind == where.kind.value)
    if where.party is not None:
        conditions.append(
            (transfers.c.from_merchant_id == where.party)
            | (transfers.c.to_merchant_id == where.party)
        )
    if where.batch_id is not None:
        in_batch = select(batch_items.c.transfer_id).where(batch_items.c.batch_id == where.batch_id)
        conditions.append(transfers.c.id.in_(in_batch))
    if after is not None:
        conditions.append(tuple_(transfers.c.created, transfers.c.id) < tuple_(*after))
    return (
        select(*TRANSFER_COLUMNS)
        .where(and_(True, *conditions))
        .order_by(transfers.c.created.desc(), transfers.c.id.desc())
        .limit(limit)
    )


# The named merchants, each with its balances among `currencies`; for a sender of a transfer that
# has fee tiers, its volume in the month (SPEC: Volume fee tiers): the running total of its
# completed transfers recorded that month (at most 31 rows) plus its pending ones (through the
# pending index: bounded by the backlog, never a scan of its history). One statement, written
# once: the submissions' hot path builds no SQL per request.
_PARTIES = text(
    """
    SELECT m.id, m.name, m.percent_fee, m.archived, m.fee_tiers, b.id AS balance_id, b.currency,
           CASE WHEN m.fee_tiers IS NOT NULL AND m.name = ANY(CAST(:senders AS varchar[])) THEN
               (SELECT coalesce(sum(total.sent), 0) FROM balance_totals total
                WHERE total.merchant_id = m.id AND total.currency = b.currency
                  AND total.day >= :month_start AND total.day < :month_end)
               + (SELECT coalesce(sum(p.amount), 0) FROM transfers p
                  WHERE p.state = 'pending' AND p.kind = 'transfer' AND p.from_merchant_id = m.id
                    AND p.currency = b.currency AND p.created >= :start AND p.created < :end)
           END AS volume
    FROM merchants m
    LEFT JOIN accounts b
      ON b.merchant_id = m.id AND b.kind = 'merchant'
     AND b.currency = ANY(CAST(:currencies AS varchar[]))
    WHERE m.name = ANY(CAST(:names AS varchar[]))
    """
)


class TransferRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, transfer_id: uuid.UUID) -> Transfer | None:
        statement = select(*TRANSFER_COLUMNS).where(transfers.c.id == transfer_id)
        row = (await self._connection.execute(statement)).one_or_none()
        return None if row is None else to_transfer(row)

    async def get_by_key(
        self, scope: uuid.UUID | None, idempotency_key: str
    ) -> StoredTransfer | None:
        statement = select(*TRANSFER_COLUMNS, transfers.c.request_fingerprint).where(
            _in_scope(scope), transfers.c.idempotency_key == idempotency_key
        )
        row = (await self._connection.execute(statement)).one_or_none()
        if row is None:
            return None
        return StoredTransfer(to_transfer(row), row.request_fingerprint)

    async def get_by_keys(
        self, scope: uuid.UUID | None, keys: list[str]
    ) -> dict[str, StoredTransfer]:
        statement = select(*TRANSFER_COLUMNS, transfers.c.request_fingerprint).where(
            _in_scope(scope), is_any(transfers.c.idempotency_key, keys, String())
        )
        return {
            row.idempotency_key: StoredTransfer(to_transfer(row), row.request_fingerprint)
            for row in await self._connection.execute(statement)
        }

    async def get_reversible(self, transfer_id: uuid.UUID) -> Reversible | None:
        """The transfer with the totals of its reversals that are still pending."""
        reversal = transfers.alias("reversal")
        pending = (
            select(
                func.coalesce(func.sum(reversal.c.amount), 0).label("amount"),
                func.coalesce(func.sum(reversal.c.fee), 0).label("fee"),
            )
            .where(
                reversal.c.reverses == transfers.c.id,
                reversal.c.state == TransferState.PENDING.value,
            )
            .lateral("pending")
        )
        statement = (
            select(
                *TRANSFER_COLUMNS,
                pending.c.amount.label("pending_amount"),
                pending.c.fee.label("pending_fee"),
            )
            .select_from(transfers.join(pending, true()))
            .where(transfers.c.id == transfer_id)
        )
        row = (await self._connection.execute(statement)).one_or_none()
        if row is None:
            return None
        return Reversible(to_transfer(row), row.pending_amount, row.pending_fee)

    async def get_counterparties(self, wanted: PartiesWanted) -> Counterparties:
        """The named merchants that exist, each with its balances among the currencies (and,
        for the senders of `wanted.volumes` that have fee tiers, their volume in them); and the
        current rates of the FX pairs that have one (a second statement, only if any is asked)."""
        volumes = wanted.volumes
        rows = await self._connection.execute(
            _PARTIES,
            {
                "names": wanted.names,
                "currencies": wanted.currencies,
                "senders": volumes.senders,
                "start": volumes.start,
                "end": volumes.end,
                "month_start": volumes.start.date(),
                "month_end": volumes.end.date(),
            },
        )
        parties: dict[str, Party] = {}
        for row in rows:
            party = parties.setdefault(
                row.name,
                Party(
                    row.id, row.name, row.percent_fee, row.archived, {}, to_fee_tiers(row.fee_tiers)
                ),
            )
            if row.balance_id is not None:
                party.balance_ids[row.currency] = row.balance_id
            if row.volume is not None:
                party.volumes[row.currency] = row.volume
        return Counterparties(parties, await self._get_rates(wanted.pairs))

    async def _get_rates(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Decimal]:
        """The current FX rates of `pairs` (base, quote) that have one (primary key lookups)."""
        if not pairs:
            return {}
        rows = await self._connection.execute(
            _RATES_OF_PAIRS,
            {"bases": [base for base, _ in pairs], "quotes": [quote for _, quote in pairs]},
        )
        return {(row.base, row.quote): row.rate for row in rows}

    async def insert_pending_many(self, new: list[NewTransfer]) -> dict[uuid.UUID, Transfer]:
        """Record pending transfers in one statement; those whose key was free, by id.

        The rows travel as one array per column (`unnest`), so 10,000 transfers are one
        statement with seventeen parameters, not 170,000. ON CONFLICT DO NOTHING waits for a
        concurrent insert of the same key to commit or roll back, so concurrent duplicates
        (in one statement or in several) resolve to exactly one row.
        """
        if not new:
            return {}
        # In key order: two statements racing on the same keys then wait on each other in the
        # same order, never in a cycle (answers are matched back by id, so order is free).
        new = sorted(new, key=lambda t: (str(t.idempotency_scope or ""), t.idempotency_key))
        result = await self._connection.execute(
            _INSERT_PENDING_MANY,
            {
                "ids": [t.id for t in new],
                "scopes": [t.idempotency_scope for t in new],
                "keys": [t.idempotency_key for t in new],
                "fingerprints": [t.request_fingerprint for t in new],
                "kinds": [t.kind.value for t in new],
                "senders": [t.sender_id for t in new],
                "receivers": [t.receiver_id for t in new],
                "amounts": [t.amount for t in new],
                "fees": [t.fee for t in new],
                "percent_fees": [t.percent_fee for t in new],
                "currencies": [t.currency for t in new],
                "request_ids": [t.request_id for t in new],
                "reverses": [t.reverses for t in new],
                "reversed": [t.nothing_reversed for t in new],
                "to_currencies": [t.to_currency for t in new],
                "fx_rates": [t.fx_rate for t in new],
                "converted": [t.converted_amount for t in new],
            },
        )
        return {row.id: to_transfer(row) for row in result}

    async def pending_summary(self) -> tuple[int, float | None]:
        """How many transfers are pending, and the age in seconds of the oldest one."""
        row = (
            await self._connection.execute(
                text(
                    "SELECT count(*) AS pending,"
                    " extract(epoch FROM clock_timestamp() - min(created)) AS oldest_age_s"
                    " FROM transfers WHERE state = 'pending'"
                )
            )
        ).one()
        return int(row.pending), None if row.oldest_age_s is None else float(row.oldest_age_s)

    async def list(
        self, where: TransferFilter, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Transfer]:
        result = await self._connection.execute(list_statement(where, after, limit))
        return [to_transfer(row) for row in result]
