"""The worker's side of the ledger (sync): lock, post, fail, sweep."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, Uuid, func, select, text

from shared.db.tables import accounts, transfers
from shared.db.transfers import TRANSFER_COLUMNS, is_any, to_transfer
from shared.domain.transfers import Transfer, TransferState

# One statement writes every posting of a completed transfer: debit the sender, credit the
# receiver (opening its balance if missing), credit one fee account shard (opening it if
# missing), append the journal entries with each account's new balance and version, and mark
# the transfer completed. The caller holds the row locks of both balances.
_POST_TRANSFER = text(
    """
    WITH debit AS (
        UPDATE accounts SET amount = amount - :debit, version = version + 1
        WHERE id = :sender_id
        RETURNING id, amount, version
    ), credit AS (
        INSERT INTO accounts (id, kind, merchant_id, currency, amount, version)
        VALUES (:new_receiver_id, 'merchant', :receiver_merchant_id, :currency, :amount, 1)
        ON CONFLICT (merchant_id, currency) WHERE kind = 'merchant' DO UPDATE
            SET amount = accounts.amount + EXCLUDED.amount, version = accounts.version + 1
        RETURNING id, amount, version
    ), fee AS (
        INSERT INTO accounts (id, kind, currency, shard, amount, version)
        SELECT :new_fee_id, 'fee', :currency, :shard, :fee, 1 WHERE :fee > 0
        ON CONFLICT (currency, shard) WHERE kind = 'fee' DO UPDATE
            SET amount = accounts.amount + EXCLUDED.amount, version = accounts.version + 1
        RETURNING id, amount, version
    ), journal AS (
        INSERT INTO entries
            (movement_id, transfer_id, account_id, amount, balance_after, account_version)
        SELECT :transfer_id, :transfer_id, id, -:debit, amount, version FROM debit
        UNION ALL
        SELECT :transfer_id, :transfer_id, id, :amount, amount, version FROM credit
        UNION ALL
        SELECT :transfer_id, :transfer_id, id, :fee, amount, version FROM fee
    )
    UPDATE transfers SET state = 'completed', processed = clock_timestamp()
    WHERE id = :transfer_id AND state = 'pending'
    RETURNING id
    """
)


@dataclass(frozen=True, slots=True)
class LockedBalance:
    id: uuid.UUID
    merchant_id: uuid.UUID
    amount: Decimal


class LedgerRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get_transfer(self, transfer_id: uuid.UUID) -> Transfer | None:
        statement = select(*TRANSFER_COLUMNS).where(transfers.c.id == transfer_id)
        row = self._connection.execute(statement).one_or_none()
        return None if row is None else to_transfer(row)

    def get_transfer_for_update(self, transfer_id: uuid.UUID) -> Transfer | None:
        """Lock the transfer row: a redelivered message for it waits here, then sees it final."""
        statement = select(*TRANSFER_COLUMNS).where(transfers.c.id == transfer_id).with_for_update()
        row = self._connection.execute(statement).one_or_none()
        return None if row is None else to_transfer(row)

    def lock_balances(
        self, merchant_ids: list[uuid.UUID], currency: str
    ) -> dict[uuid.UUID, LockedBalance]:
        """Lock the merchants' balances in `currency`, in merchant id order (no deadlocks)."""
        statement = (
            select(accounts.c.id, accounts.c.merchant_id, accounts.c.amount)
            .where(
                accounts.c.kind == "merchant",
                accounts.c.currency == currency,
                accounts.c.merchant_id.in_(merchant_ids),
            )
            .order_by(accounts.c.merchant_id)
            .with_for_update()
        )
        return {
            row.merchant_id: LockedBalance(row.id, row.merchant_id, row.amount)
            for row in self._connection.execute(statement)
        }

    def post_transfer(self, transfer: Transfer, sender_balance_id: uuid.UUID, shard: int) -> None:
        result = self._connection.execute(
            _POST_TRANSFER,
            {
                "transfer_id": transfer.id,
                "sender_id": sender_balance_id,
                "receiver_merchant_id": transfer.to_merchant_id,
                "new_receiver_id": uuid.uuid4(),
                "new_fee_id": uuid.uuid4(),
                "currency": transfer.currency,
                "shard": shard,
                "amount": transfer.amount,
                "fee": transfer.fee,
                "debit": transfer.amount + transfer.fee,
            },
        )
        if result.one_or_none() is None:
            raise RuntimeError(f"transfer {transfer.id} was not pending when posted")

    def fail_transfer(self, transfer_id: uuid.UUID, reason: str) -> None:
        self._connection.execute(
            transfers.update()
            .where(transfers.c.id == transfer_id, transfers.c.state == TransferState.PENDING)
            .values(
                state=TransferState.FAILED, failure_reason=reason, processed=func.clock_timestamp()
            )
        )

    def claim_stale_pending(self, older_than_s: float, limit: int) -> list[uuid.UUID]:
        """Mark up to `limit` transfers pending since before `older_than_s` as enqueued now.

        SKIP LOCKED lets several sweepers (or a worker applying one of them) run at once.
        """
        rows = self._connection.execute(
            text(
                """
                UPDATE transfers SET enqueued = clock_timestamp()
                WHERE id IN (
                    SELECT id FROM transfers
                    WHERE state = 'pending'
                      AND enqueued < clock_timestamp() - make_interval(secs => :older_than_s)
                    ORDER BY enqueued
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING id
                """
            ),
            {"older_than_s": older_than_s, "limit": limit},
        )
        return [row.id for row in rows]


@dataclass
class AccountState:
    """A locked account during a group: where it started, and the entries written to it."""

    id: uuid.UUID
    amount: Decimal
    version: int


@dataclass(frozen=True, slots=True)
class NewEntry:
    transfer_id: uuid.UUID
    account_id: uuid.UUID
    amount: Decimal
    balance_after: Decimal
    account_version: int


class GroupLedgerRepository(LedgerRepository):
    """The statements that apply a whole group of transfers in one transaction."""

    def claim_pending(self, transfer_ids: list[uuid.UUID]) -> list[Transfer]:
        """Lock the group's transfers that are still pending and not being applied elsewhere.

        SKIP LOCKED: a transfer another worker holds is that worker's to finish (or the sweep's,
        if that worker dies), so a group never waits on a transfer row.
        """
        statement = (
            select(*TRANSFER_COLUMNS)
            .where(
                is_any(transfers.c.id, transfer_ids, Uuid()),
                transfers.c.state == TransferState.PENDING,
            )
            .order_by(transfers.c.id)
            .with_for_update(skip_locked=True)
        )
        return [to_transfer(row) for row in self._connection.execute(statement)]

    def oldest_pending(self, limit: int) -> list[uuid.UUID]:
        """Up to `limit` pending transfers, longest waiting first, that no one is applying."""
        rows = self._connection.execute(
            select(transfers.c.id)
            .where(transfers.c.state == TransferState.PENDING)
            .order_by(transfers.c.enqueued, transfers.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [row.id for row in rows]

    def open_receiver_balances(self, transfer_ids: list[uuid.UUID]) -> None:
        """Open an empty balance for each pending transfer's receiver that has none.

        Run in its own short transaction before the group's, so that the group's transaction
        only ever locks rows that exist, in one global order.
        """
        self._connection.execute(
            text(
                """
                INSERT INTO accounts (id, kind, merchant_id, currency, amount, version)
                SELECT gen_random_uuid(), 'merchant', to_merchant_id, currency, 0, 0
                FROM (
                    SELECT DISTINCT to_merchant_id, currency FROM transfers
                    WHERE id = ANY(CAST(:transfer_ids AS uuid[])) AND state = 'pending'
                ) receiver
                ORDER BY to_merchant_id, currency
                ON CONFLICT (merchant_id, currency) WHERE kind = 'merchant' DO NOTHING
                """
            ),
            {"transfer_ids": transfer_ids},
        )

    def lock_balance_set(
        self, keys: list[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], AccountState]:
        """Lock the balances in (merchant id, currency) order: the one global row-lock order."""
        ordered = sorted(set(keys))
        rows = self._connection.execute(
            text(
                """
                SELECT a.id, a.merchant_id, a.currency, a.amount, a.version
                FROM accounts a
                JOIN unnest(CAST(:merchant_ids AS uuid[]), CAST(:currencies AS varchar[]))
                    AS wanted (merchant_id, currency)
                  ON a.merchant_id = wanted.merchant_id AND a.currency = wanted.currency
                WHERE a.kind = 'merchant'
                ORDER BY a.merchant_id, a.currency
                FOR UPDATE OF a
                """
            ),
            {"merchant_ids": [k[0] for k in ordered], "currencies": [k[1] for k in ordered]},
        )
        return {
            (row.merchant_id, row.currency): AccountState(row.id, row.amount, row.version)
            for row in rows
        }

    def credit_fee_shards(
        self, credits: dict[tuple[str, int], tuple[Decimal, int]]
    ) -> dict[tuple[str, int], AccountState]:
        """Add each shard's total fee and entry count; return every shard's state afterwards.

        Shards are taken in (currency, shard) order, after every balance: the lock order.
        """
        ordered = sorted(credits)
        rows = self._connection.execute(
            text(
                """
                INSERT INTO accounts (id, kind, currency, shard, amount, version)
                SELECT gen_random_uuid(), 'fee', currency, shard, total, entries
                FROM unnest(CAST(:currencies AS varchar[]), CAST(:shards AS smallint[]),
                            CAST(:totals AS numeric[]), CAST(:entries AS bigint[]))
                    AS credit (currency, shard, total, entries)
                ORDER BY currency, shard
                ON CONFLICT (currency, shard) WHERE kind = 'fee' DO UPDATE
                    SET amount = accounts.amount + EXCLUDED.amount,
                        version = accounts.version + EXCLUDED.version
                RETURNING id, currency, shard, amount, version
                """
            ),
            {
                "currencies": [k[0] for k in ordered],
                "shards": [k[1] for k in ordered],
                "totals": [credits[k][0] for k in ordered],
                "entries": [credits[k][1] for k in ordered],
            },
        )
        return {
            (row.currency, row.shard): AccountState(row.id, row.amount, row.version) for row in rows
        }

    def write_group(
        self,
        balances: list[AccountState],
        entries: list[NewEntry],
        completed: list[uuid.UUID],
        failed: dict[str, list[uuid.UUID]],
    ) -> None:
        """New balances, the journal entries, and every transfer's final state."""
        if balances:
            self._connection.execute(
                text(
                    """
                    UPDATE accounts SET amount = new.amount, version = new.version
                    FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS numeric[]),
                                CAST(:versions AS bigint[])) AS new (id, amount, version)
                    WHERE accounts.id = new.id
                    """
                ),
                {
                    "ids": [b.id for b in balances],
                    "amounts": [b.amount for b in balances],
                    "versions": [b.version for b in balances],
                },
            )
        if entries:
            self._connection.execute(
                text(
                    """
                    INSERT INTO entries (movement_id, transfer_id, account_id, amount,
                                         balance_after, account_version)
                    SELECT transfer_id, transfer_id, account_id, amount, balance_after, version
                    FROM unnest(CAST(:transfer_ids AS uuid[]), CAST(:account_ids AS uuid[]),
                                CAST(:amounts AS numeric[]), CAST(:balances AS numeric[]),
                                CAST(:versions AS bigint[]))
                        AS entry (transfer_id, account_id, amount, balance_after, version)
                    """
                ),
                {
                    "transfer_ids": [e.transfer_id for e in entries],
                    "account_ids": [e.account_id for e in entries],
                    "amounts": [e.amount for e in entries],
                    "balances": [e.balance_after for e in entries],
                    "versions": [e.account_version for e in entries],
                },
            )
        if completed:
            self._connection.execute(
                transfers.update()
                .where(is_any(transfers.c.id, completed, Uuid()))
                .values(state=TransferState.COMPLETED, processed=func.clock_timestamp())
            )
        for reason, transfer_ids in failed.items():
            self._connection.execute(
                transfers.update()
                .where(is_any(transfers.c.id, transfer_ids, Uuid()))
                .values(
                    state=TransferState.FAILED,
                    failure_reason=reason,
                    processed=func.clock_timestamp(),
                )
            )
