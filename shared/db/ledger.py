"""The worker's side of the ledger (sync): claim, open, lock, write plans; find stale ones.

`write_journal` is the one writer of the postings of every kind of movement: every path (a
single transfer, a drained backlog, a bulk group, the groups the sweep re-enqueues) claims its
transfers, locks their originals (reversals) and accounts, and writes what the domain's
`Journal` planned, in the same statements. (A balance's
initial amount is written when the balance is opened, `shared/db/merchants.py`.)
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Uuid, func, select, text

from shared.db.columns import TRANSFER_COLUMNS, is_any, to_transfer
from shared.db.limits import LIMITS_OF_BALANCES, to_limit_usage
from shared.db.tables import transfers
from shared.domain.limits import LimitUsage, month_start
from shared.domain.posting import AccountBalance, AccountKey, AccountKind, Journal, Reversed
from shared.domain.transfers import Transfer, TransferState

# Accounts a group may post to that do not exist yet (a receiver's first balance in a
# currency, a fee shard's first fee, a currency's first deposit or conversion), opened empty, in
# key order.
# No account row is locked yet when this runs, so a wait here (on a concurrent opener of the
# same account) closes no cycle.
_OPEN_ACCOUNTS = text(
    """
    WITH merchant AS (
        INSERT INTO accounts (id, kind, merchant_id, currency, amount, version)
        SELECT gen_random_uuid(), 'merchant', merchant_id, currency, 0, 0
        FROM unnest(CAST(:merchant_ids AS uuid[]), CAST(:merchant_currencies AS varchar[]))
            AS wanted (merchant_id, currency)
        ON CONFLICT DO NOTHING
        RETURNING id
    ), fee AS (
        INSERT INTO accounts (id, kind, currency, shard, amount, version)
        SELECT gen_random_uuid(), 'fee', currency, shard, 0, 0
        FROM unnest(CAST(:fee_currencies AS varchar[]), CAST(:fee_shards AS smallint[]))
            AS wanted (currency, shard)
        ON CONFLICT DO NOTHING
        RETURNING id
    ), issuance AS (
        INSERT INTO accounts (id, kind, currency, amount, version)
        SELECT gen_random_uuid(), 'issuance', currency, 0, 0
        FROM unnest(CAST(:issuance_currencies AS varchar[])) AS wanted (currency)
        ON CONFLICT DO NOTHING
        RETURNING id
    ), fx AS (
        INSERT INTO accounts (id, kind, currency, amount, version)
        SELECT gen_random_uuid(), 'fx', currency, 0, 0
        FROM unnest(CAST(:fx_currencies AS varchar[])) AS wanted (currency)
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT id FROM merchant UNION ALL SELECT id FROM fee UNION ALL SELECT id FROM issuance
    UNION ALL SELECT id FROM fx
    """
)

# Every account of the group, locked in id order: the one global row-lock order of the ledger.
# Each kind is found through its own unique index. The ids are gathered first, as one array (an
# InitPlan, computed once): when a row was updated by another transaction while we waited for
# its lock, READ COMMITTED re-checks the row against the WHERE clause, and a re-check of a join
# back to `accounts` would drop it; `id = ANY(<that array>)` keeps it, with its new balance.
_LOCK_ACCOUNTS = text(
    """
    SELECT a.id, a.kind, a.merchant_id, a.currency, a.shard, a.amount, a.version
    FROM accounts a
    WHERE a.id = ANY(ARRAY(
        SELECT m.id FROM accounts m
        JOIN unnest(CAST(:merchant_ids AS uuid[]), CAST(:merchant_currencies AS varchar[]))
            AS w (merchant_id, currency)
          ON m.kind = 'merchant' AND m.merchant_id = w.merchant_id AND m.currency = w.currency
        UNION ALL
        SELECT f.id FROM accounts f
        JOIN unnest(CAST(:fee_currencies AS varchar[]), CAST(:fee_shards AS smallint[]))
            AS w (currency, shard)
          ON f.kind = 'fee' AND f.currency = w.currency AND f.shard = w.shard
        UNION ALL
        SELECT i.id FROM accounts i
        WHERE i.kind = 'issuance' AND i.currency = ANY(CAST(:issuance_currencies AS varchar[]))
        UNION ALL
        SELECT x.id FROM accounts x
        WHERE x.kind = 'fx' AND x.currency = ANY(CAST(:fx_currencies AS varchar[]))
    ))
    ORDER BY a.id
    FOR UPDATE OF a
    """
)

# The originals of a group's reversals, locked (after the reversals were claimed, before any
# account), so that concurrent reversals of one transfer settle one after the other. NO KEY:
# a new reversal's foreign key to its original (FOR KEY SHARE) need not wait for the group.
_LOCK_ORIGINALS = text(
    """
    SELECT id, amount, fee, reversed_amount, reversed_fee FROM transfers
    WHERE id = ANY(CAST(:ids AS uuid[])) AND kind = 'transfer' AND state = 'completed'
    ORDER BY id
    FOR NO KEY UPDATE
    """
)

# Everything a group's journal holds, in one statement: the accounts' new balances and
# versions, the entries, each transfer's final state (and settled fee), the reversal
# totals of the originals its reversals gave back, and the senders' running totals. Accounts
# the group opened that no plan posted to are removed again: a failed transfer leaves no empty
# balance behind.
_WRITE_JOURNAL = text(
    """
    WITH unused AS (
        DELETE FROM accounts WHERE id = ANY(CAST(:unused_ids AS uuid[])) AND version = 0
    ), moved AS (
        UPDATE accounts SET amount = new.amount, version = new.version
        FROM unnest(CAST(:account_ids AS uuid[]), CAST(:account_amounts AS numeric[]),
                    CAST(:account_versions AS bigint[])) AS new (id, amount, version)
        WHERE accounts.id = new.id
    ), journal AS (
        INSERT INTO entries
            (movement_id, transfer_id, account_id, amount, balance_after, account_version)
        SELECT transfer_id, transfer_id, account_id, amount, balance_after, version
        FROM unnest(CAST(:entry_transfers AS uuid[]), CAST(:entry_accounts AS uuid[]),
                    CAST(:entry_amounts AS numeric[]), CAST(:entry_balances AS numeric[]),
                    CAST(:entry_versions AS bigint[]))
            AS entry (transfer_id, account_id, amount, balance_after, version)
    ), reversed AS (
        UPDATE transfers SET reversed_amount = total.amount, reversed_fee = total.fee
        FROM unnest(CAST(:original_ids AS uuid[]), CAST(:reversed_amounts AS numeric[]),
                    CAST(:reversed_fees AS numeric[])) AS total (id, amount, fee)
        WHERE transfers.id = total.id
    ), totals AS (
        INSERT INTO balance_totals (merchant_id, currency, day, debited, sent)
        SELECT * FROM unnest(CAST(:total_merchants AS uuid[]),
                             CAST(:total_currencies AS varchar[]), CAST(:total_days AS date[]),
                             CAST(:total_debited AS numeric[]), CAST(:total_sent AS numeric[]))
        ON CONFLICT (merchant_id, currency, day) DO UPDATE
            SET debited = balance_totals.debited + EXCLUDED.debited,
                sent = balance_totals.sent + EXCLUDED.sent
    )
    UPDATE transfers
    SET state = outcome.state, failure_reason = outcome.reason, fee = outcome.fee,
        processed = :processed
    FROM unnest(CAST(:transfer_ids AS uuid[]), CAST(:states AS varchar[]),
                CAST(:reasons AS text[]), CAST(:fees AS numeric[]))
        AS outcome (id, state, reason, fee)
    WHERE transfers.id = outcome.id AND transfers.state = :pending
    RETURNING transfers.id
    """
)

# One more failed attempt at applying each transfer. Below the bound it waits (the sweep skips
# it until `enqueued` is stale again, later each time); at the bound it fails, moving nothing.
_RECORD_APPLY_FAILURES = text(
    """
    UPDATE transfers SET
        apply_failures = apply_failures + 1,
        enqueued = clock_timestamp() + make_interval(secs => :backoff_s * 2 ^ apply_failures),
        state = CASE WHEN apply_failures + 1 >= :max_failures THEN :failed ELSE state END,
        failure_reason = CASE WHEN apply_failures + 1 >= :max_failures THEN :reason END,
        processed = CASE WHEN apply_failures + 1 >= :max_failures THEN clock_timestamp() END
    WHERE id = ANY(CAST(:ids AS uuid[])) AND state = :pending
    RETURNING id, kind, from_merchant_id, to_merchant_id, amount, fee, percent_fee, currency,
              idempotency_key, state, failure_reason, created, processed, reverses,
              reversed_amount, reversed_fee, to_currency, fx_rate, converted_amount
    """
)


def _key_columns(keys: list[AccountKey]) -> dict[str, list[Any]]:
    """The keys as one array per column and kind, in key order."""
    ordered = sorted(set(keys))
    merchant = [key for key in ordered if key.kind is AccountKind.MERCHANT]
    fee = [key for key in ordered if key.kind is AccountKind.FEE]
    return {
        "merchant_ids": [key.merchant_id for key in merchant],
        "merchant_currencies": [key.currency for key in merchant],
        "fee_currencies": [key.currency for key in fee],
        "fee_shards": [key.shard for key in fee],
        "issuance_currencies": [k.currency for k in ordered if k.kind is AccountKind.ISSUANCE],
        "fx_currencies": [k.currency for k in ordered if k.kind is AccountKind.FX],
    }


class LedgerRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get_transfers(self, transfer_ids: list[uuid.UUID]) -> list[Transfer]:
        statement = select(*TRANSFER_COLUMNS).where(is_any(transfers.c.id, transfer_ids, Uuid()))
        return [to_transfer(row) for row in self._connection.execute(statement)]

    def claim_pending(self, transfer_ids: list[uuid.UUID]) -> list[Transfer]:
        """Lock the transfers that are still pending and not being applied elsewhere.

        SKIP LOCKED: a transfer another worker holds is that worker's to finish (or the sweep's,
        if that worker dies), so applying never waits on a transfer row.
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
            # A transfer backing off after a fault (enqueued in the future) is not due yet.
            .where(
                transfers.c.state == TransferState.PENDING,
                transfers.c.enqueued <= func.clock_timestamp(),
            )
            .order_by(transfers.c.enqueued, transfers.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [row.id for row in rows]

    def lock_originals(self, transfer_ids: list[uuid.UUID]) -> dict[uuid.UUID, Reversed]:
        """Lock the completed transfers among `transfer_ids` and read their reversal totals."""
        if not transfer_ids:
            return {}
        rows = self._connection.execute(_LOCK_ORIGINALS, {"ids": sorted(set(transfer_ids))})
        return {
            row.id: Reversed(row.id, row.amount, row.fee, row.reversed_amount, row.reversed_fee)
            for row in rows
        }

    def open_accounts(self, keys: list[AccountKey]) -> set[uuid.UUID]:
        """Create, empty, the accounts among `keys` that do not exist yet (before any lock)."""
        return {row.id for row in self._connection.execute(_OPEN_ACCOUNTS, _key_columns(keys))}

    def lock_accounts(self, keys: list[AccountKey]) -> dict[AccountKey, AccountBalance]:
        """Lock the accounts in id order and read their balances."""
        rows = self._connection.execute(_LOCK_ACCOUNTS, _key_columns(keys))
        return {
            AccountKey(AccountKind(row.kind), row.currency, row.merchant_id, row.shard): (
                AccountBalance(row.id, row.amount, row.version)
            )
            for row in rows
        }

    def read_limits(
        self, keys: list[AccountKey], today: date
    ) -> dict[AccountKey, list[LimitUsage]]:
        """The limits of the merchants' balances among `keys`, with what they used in the
        period `today` is in (read after the balances were locked: nothing moves them now)."""
        balances = sorted({key for key in keys if key.kind is AccountKind.MERCHANT})
        if not balances:
            return {}
        rows = self._connection.execute(
            LIMITS_OF_BALANCES,
            {
                "merchant_ids": [key.merchant_id for key in balances],
                "currencies": [key.currency for key in balances],
                "today": today,
                "month_start": month_start(today),
            },
        )
        limits: dict[AccountKey, list[LimitUsage]] = {}
        for row in rows:
            key = AccountKey(AccountKind.MERCHANT, row.currency, merchant_id=row.merchant_id)
            limits.setdefault(key, []).append(to_limit_usage(row))
        return limits

    def write_journal(self, journal: Journal, opened: set[uuid.UUID], processed: datetime) -> None:
        """Write every plan of the journal (all of them, or by raising none), stamped
        `processed`, and drop the accounts among `opened` that no plan posted to."""
        balances = journal.changed_balances()
        unused = opened - {balance.id for balance in balances}
        if not journal.plans and not unused:
            return
        entries = journal.entries
        plans = journal.plans
        originals = journal.reversed_originals()
        totals = journal.balance_totals()
        written = self._connection.execute(
            _WRITE_JOURNAL,
            {
                "unused_ids": list(unused),
                "account_ids": [balance.id for balance in balances],
                "account_amounts": [balance.amount for balance in balances],
                "account_versions": [balance.version for balance in balances],
                "entry_transfers": [entry.transfer_id for entry in entries],
                "entry_accounts": [entry.account_id for entry in entries],
                "entry_amounts": [entry.amount for entry in entries],
                "entry_balances": [entry.balance_after for entry in entries],
                "entry_versions": [entry.account_version for entry in entries],
                "transfer_ids": [plan.transfer_id for plan in plans],
                "states": [plan.state.value for plan in plans],
                "reasons": [plan.failure_reason for plan in plans],
                "fees": [plan.fee for plan in plans],
                "original_ids": [original.id for original in originals],
                "reversed_amounts": [original.reversed_amount for original in originals],
                "reversed_fees": [original.reversed_fee for original in originals],
                "total_merchants": [total.merchant_id for total in totals],
                "total_currencies": [total.currency for total in totals],
                "total_days": [total.day for total in totals],
                "total_debited": [total.debited for total in totals],
                "total_sent": [total.sent for total in totals],
                "processed": processed,
                "pending": TransferState.PENDING,
            },
        ).all()
        if len(written) != len(plans):
            # The transfers were claimed under lock in this transaction: a bug if they moved.
            raise RuntimeError(f"{len(plans) - len(written)} planned transfers were not pending")

    def record_apply_failures(
        self, transfer_ids: list[uuid.UUID], *, reason: str, max_failures: int, backoff_s: float
    ) -> tuple[list[uuid.UUID], list[Transfer]]:
        """Count a failed attempt on each still-pending transfer: (those that wait for another
        try, those that reached the bound and failed now)."""
        rows = self._connection.execute(
            _RECORD_APPLY_FAILURES,
            {
                "ids": transfer_ids,
                "reason": reason,
                "max_failures": max_failures,
                "backoff_s": backoff_s,
                "pending": TransferState.PENDING,
                "failed": TransferState.FAILED,
            },
        )
        outcomes = [to_transfer(row) for row in rows]
        return (
            [t.id for t in outcomes if t.state is TransferState.PENDING],
            [t for t in outcomes if t.state is TransferState.FAILED],
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
                    WHERE state = :pending
                      AND enqueued < clock_timestamp() - make_interval(secs => :older_than_s)
                    ORDER BY enqueued
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING id
                """
            ),
            {"older_than_s": older_than_s, "limit": limit, "pending": TransferState.PENDING},
        )
        return [row.id for row in rows]
