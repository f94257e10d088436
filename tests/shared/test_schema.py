"""The schema: migrations match `tables.py`, and the database refuses what must never happen."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db.tables import metadata
from shared.infra.database import SyncDatabase
from tests.helpers import assert_ledger_consistent


def test_migrations_match_the_table_definitions(sync_db: SyncDatabase) -> None:
    with sync_db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def _merchant_with_balance(
    connection, amount: str, currency: str = "USD"
) -> tuple[uuid.UUID, uuid.UUID]:  # type: ignore[no-untyped-def]
    merchant_id, balance_id = uuid.uuid4(), uuid.uuid4()
    connection.execute(
        text("INSERT INTO merchants (id, name, percent_fee) VALUES (:id, :name, 0)"),
        {"id": merchant_id, "name": f"schema-{merchant_id.hex[:10]}"},
    )
    connection.execute(
        text(
            "INSERT INTO accounts (id, kind, merchant_id, currency, amount)"
            " VALUES (:id, 'merchant', :merchant, :currency, :amount)"
        ),
        {
            "id": balance_id,
            "merchant": merchant_id,
            "amount": Decimal(amount),
            "currency": currency,
        },
    )
    return merchant_id, balance_id


class TestDatabaseRefuses:
    """Every test here leaves the ledger consistent: the whole session shares it."""

    def _refused(self, sync_db: SyncDatabase, statement: str, **params: object) -> None:
        with pytest.raises(DBAPIError), sync_db.engine.begin() as connection:
            ids = _merchant_with_balance(connection, "10")
            connection.execute(text(statement), {"merchant": ids[0], "balance": ids[1], **params})

    def test_a_negative_balance(self, sync_db: SyncDatabase) -> None:
        self._refused(sync_db, "UPDATE accounts SET amount = -0.00000001 WHERE id = :balance")

    def test_a_second_balance_in_one_currency(self, sync_db: SyncDatabase) -> None:
        self._refused(
            sync_db,
            "INSERT INTO accounts (id, kind, merchant_id, currency, amount)"
            " VALUES (gen_random_uuid(), 'merchant', :merchant, 'USD', 0)",
        )

    def test_a_lower_case_currency(self, sync_db: SyncDatabase) -> None:
        self._refused(sync_db, "UPDATE accounts SET currency = 'usd' WHERE id = :balance")

    def test_a_zero_journal_entry(self, sync_db: SyncDatabase) -> None:
        self._refused(
            sync_db,
            "INSERT INTO entries (movement_id, account_id, amount, balance_after, account_version)"
            " VALUES (gen_random_uuid(), :balance, 0, 10, 1)",
        )

    def test_changing_or_deleting_a_journal_entry(self, sync_db: SyncDatabase) -> None:
        # A real, balanced deposit (the ledger stays consistent for the tests that follow).
        currency = f"T{uuid.uuid4().int % 10**8:08d}"
        movement = uuid.uuid4()
        with sync_db.transaction() as connection:
            _, balance = _merchant_with_balance(connection, "5", currency)
            connection.execute(
                text(
                    "INSERT INTO accounts (id, kind, currency, amount, version)"
                    " VALUES (gen_random_uuid(), 'issuance', :currency, -5, 1)"
                ),
                {"currency": currency},
            )
            connection.execute(
                text(
                    "INSERT INTO entries (movement_id, account_id, amount, balance_after,"
                    " account_version)"
                    " SELECT :movement, id, amount, amount, 1 FROM accounts"
                    " WHERE currency = :currency"
                ),
                {"movement": movement, "currency": currency},
            )
            connection.execute(
                text("UPDATE accounts SET version = 1 WHERE id = :id"), {"id": balance}
            )
        for statement in (
            "UPDATE entries SET amount = 6 WHERE account_id = :balance",
            "DELETE FROM entries WHERE account_id = :balance",
        ):
            with pytest.raises(DBAPIError, match="immutable"), sync_db.engine.begin() as connection:
                connection.execute(text(statement), {"balance": balance})
        assert_ledger_consistent(sync_db)

    def test_changing_a_final_transfer(self, sync_db: SyncDatabase) -> None:
        transfer_id = uuid.uuid4()
        with sync_db.transaction() as connection:
            sender, _ = _merchant_with_balance(connection, "0")
            receiver, _ = _merchant_with_balance(connection, "0")
            connection.execute(
                text(
                    "INSERT INTO transfers (id, idempotency_key, request_fingerprint,"
                    " from_merchant_id, to_merchant_id, amount, fee, percent_fee, currency,"
                    " state, failure_reason, processed) VALUES (:id, :key, 'f', :sender,"
                    " :receiver, 1, 0, 0, 'USD', 'failed', 'Insufficient funds', now())"
                ),
                {
                    "id": transfer_id,
                    "key": f"k-{transfer_id}",
                    "sender": sender,
                    "receiver": receiver,
                },
            )
        for statement in (
            "UPDATE transfers SET state = 'completed', failure_reason = NULL WHERE id = :id",
            "DELETE FROM transfers WHERE id = :id",
        ):
            with pytest.raises(DBAPIError), sync_db.engine.begin() as connection:
                connection.execute(text(statement), {"id": transfer_id})
