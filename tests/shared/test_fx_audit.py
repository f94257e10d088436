"""The audit with cross-currency transfers (SPEC Part 3, FX): a ledger with conversions is clean
(FX accounts count in conservation and may be negative); each way of breaking a conversion is
reported as that problem.

Like `test_audit.py`: the ledger lives in currencies of its own, written with SQL the way the
workers write, and broken inside a transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from sqlalchemy import Connection, text

from shared.db.audit import CurrencyTotals, check_ledger
from shared.domain.money import compute_fee, convert_amount
from shared.infra.database import SyncDatabase
from shared.services.audit import report
from tests.helpers import unique
from tests.shared.test_audit import Damage, Writer, fresh_currency

pytestmark = pytest.mark.integration

D = Decimal


def fx_transfer(
    source: Writer,
    target: Writer,
    sender: UUID,
    receiver: UUID,
    amount: str,
    rate: str,
    *,
    percent_fee: str = "0",
    state: str = "completed",
    converted: str | None = None,
    legs: list[tuple[UUID, D]] | None = None,
) -> UUID:
    """A cross-currency transfer from `source`'s currency to `target`'s; when completed, with
    its five postings (or `legs`)."""
    transfer_id = uuid.uuid4()
    value, fee = D(amount), compute_fee(D(amount), D(percent_fee))
    converted_amount = convert_amount(value, D(rate)) if converted is None else D(converted)
    source.connection.execute(
        text(
            """
            INSERT INTO transfers (
                id, idempotency_key, request_fingerprint, kind, from_merchant_id,
                to_merchant_id, reversed_amount, reversed_fee, amount, fee, percent_fee,
                currency, to_currency, fx_rate, converted_amount, state, failure_reason,
                processed, enqueued)
            VALUES (:id, :key, :fingerprint, 'transfer', :sender, :receiver, 0, 0, :amount, :fee,
                    :percent_fee, :currency, :to_currency, :rate, :converted, :state, :reason,
                    :processed,
                    -- Never due: the session's workers (sweep, drain) must leave it pending.
                    CASE WHEN CAST(:state AS varchar) = 'pending' THEN 'infinity'::timestamptz
                         ELSE now() END)
            """
        ),
        {
            "id": transfer_id,
            "key": unique("fxaudit"),
            "fingerprint": "0" * 64,
            "sender": sender,
            "receiver": receiver,
            "amount": value,
            "fee": fee,
            "percent_fee": D(percent_fee),
            "currency": source.currency,
            "to_currency": target.currency,
            "rate": D(rate),
            "converted": converted_amount,
            "state": state,
            "reason": "Insufficient funds" if state == "failed" else None,
            "processed": None if state == "pending" else datetime.now(UTC),
        },
    )
    if state == "completed":
        if legs is None:
            legs = [
                (source.balance(sender), -(value + fee)),
                (source.account("fx"), value),
                (target.account("fx"), -converted_amount),
                (target.balance(receiver), converted_amount),
            ]
            if fee:
                legs.append((source.fee_account(transfer_id), fee))
        source.post(transfer_id, transfer_id, legs)
        source.count_running_totals(transfer_id)
    return transfer_id


@dataclass(frozen=True)
class FxLedger:
    currency: str  # the source currency (what `broken` names)
    target: str
    alice: UUID
    bob: UUID
    conversion: UUID  # alice (USD-like) -> bob (EUR-like), 100 at 0.923456789012, fee 2%
    back: UUID  # bob -> alice, back from the target currency, 10 at 1.1


@pytest.fixture(scope="module")
def ledger(sync_db: SyncDatabase) -> FxLedger:
    with sync_db.transaction() as connection:
        usd, eur = Writer(connection, fresh_currency()), Writer(connection, fresh_currency())
        alice, bob = usd.merchant("2"), usd.merchant("0")
        usd.open_balance(alice, "1000")
        conversion = fx_transfer(usd, eur, alice, bob, "100", "0.923456789012", percent_fee="2")
        fx_transfer(usd, eur, alice, bob, "5000", "0.9", percent_fee="2", state="failed")
        fx_transfer(usd, eur, alice, bob, "1", "0.9", percent_fee="2", state="pending")
        back = fx_transfer(eur, usd, bob, alice, "10", "1.1")
        return FxLedger(usd.currency, eur.currency, alice, bob, conversion, back)


@contextmanager
def broken(sync_db: SyncDatabase, ledger: FxLedger) -> Iterator[tuple[Damage, Writer]]:
    connect = sync_db.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connect as connection:
        transaction = connection.begin()
        try:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            yield Damage(connection, ledger.currency), Writer(connection, ledger.target)
        finally:
            transaction.rollback()


def fx_account(connection: Connection, currency: str) -> UUID:
    return UUID(
        str(
            connection.execute(
                text("SELECT id FROM accounts WHERE kind = 'fx' AND currency = :c"), {"c": currency}
            ).scalar_one()
        )
    )


class TestHealthyLedger:
    def test_conversions_are_clean_and_each_currency_is_conserved(
        self, sync_db: SyncDatabase, ledger: FxLedger
    ) -> None:
        with sync_db.transaction() as connection:
            check = check_ledger(connection)
            fx_target = connection.execute(
                text("SELECT amount FROM accounts WHERE kind = 'fx' AND currency = :c"),
                {"c": ledger.target},
            ).scalar_one()
        assert {rule: count for rule, count in check.violations.items() if count} == {}
        assert report(check, datetime.now(UTC)).ok
        # The target's FX account is negative (it paid out 92.3456789 and took back 10): no
        # negative balance for the audit. Merchant balances + fees + FX = money brought in.
        assert D(fx_target) == D("-82.3456789")
        assert check.currencies[ledger.currency] == CurrencyTotals(
            held=D(1000), issued=D(1000), brought_in=D(1000)
        )
        assert check.currencies[ledger.target] == CurrencyTotals()


class TestConversions:
    def test_a_converted_amount_that_is_not_rounded_down(
        self, sync_db: SyncDatabase, ledger: FxLedger
    ) -> None:
        """Rounded up instead (92.34567891), and posted so: only the conversion is wrong (what
        the database refuses, and every submission too)."""
        with broken(sync_db, ledger) as (damage, target):
            damage.execute("ALTER TABLE transfers DROP CONSTRAINT ck_transfers_converted_amount")
            damage.execute(
                "UPDATE transfers SET converted_amount = converted_amount + 0.00000001"
                " WHERE id = :id",
                id=ledger.conversion,
            )
            damage.shift(target.balance(ledger.bob), ledger.conversion, "0.00000001")
            damage.shift(
                fx_account(damage.connection, ledger.target), ledger.conversion, "-0.00000001"
            )
            assert damage.found() == {"conversions_not_following_the_rule": 1}

    def test_a_rate_that_is_not_the_snapshots(
        self, sync_db: SyncDatabase, ledger: FxLedger
    ) -> None:
        with broken(sync_db, ledger) as (damage, _):
            damage.execute("ALTER TABLE transfers DROP CONSTRAINT ck_transfers_converted_amount")
            damage.execute(
                "UPDATE transfers SET fx_rate = 0.92 WHERE id = :id", id=ledger.conversion
            )
            assert damage.found() == {"conversions_not_following_the_rule": 1}

    def test_a_conversion_into_its_own_currency(
        self, sync_db: SyncDatabase, ledger: FxLedger
    ) -> None:
        with broken(sync_db, ledger) as (damage, _):
            damage.execute(
                "ALTER TABLE transfers DROP CONSTRAINT ck_transfers_fx_distinct_currencies"
            )
            damage.execute(
                "UPDATE transfers SET to_currency = currency WHERE id = :id", id=ledger.conversion
            )
            found = damage.found()
            assert found.pop("conversions_not_following_the_rule") == 1
            assert found == {"wrong_postings": 1}

    def test_a_conversion_posted_as_a_same_currency_transfer(
        self, sync_db: SyncDatabase, ledger: FxLedger
    ) -> None:
        """The receiver credited `amount` in the sender's currency, no FX legs: balanced, and
        each currency conserved, but not the postings a conversion calls for."""
        with broken(sync_db, ledger) as (damage, target):
            fx_transfer(
                damage,
                target,
                ledger.alice,
                ledger.bob,
                "10",
                "2",
                legs=[(damage.balance(ledger.alice), D(-10)), (damage.balance(ledger.bob), D(10))],
            )
            assert damage.found() == {"wrong_postings": 1}

    def test_a_missing_fx_leg(self, sync_db: SyncDatabase, ledger: FxLedger) -> None:
        """The target's FX account never paid: the target currency is not conserved."""
        with broken(sync_db, ledger) as (damage, target):
            fx_transfer(
                damage,
                target,
                ledger.alice,
                ledger.bob,
                "10",
                "2",
                legs=[
                    (damage.balance(ledger.alice), D(-10)),
                    (damage.account("fx"), D(10)),
                    (target.balance(ledger.bob), D(20)),
                ],
            )
            found = damage.found()
            assert found.pop("wrong_postings") == 1
            assert found.pop("currencies_not_conserved") == 1
            assert found == {"unbalanced_movements": 1}

    def test_an_fx_leg_in_the_wrong_currency(self, sync_db: SyncDatabase, ledger: FxLedger) -> None:
        """Both FX legs on the sender's currency's FX account: balanced in sum, but neither
        currency is conserved."""
        with broken(sync_db, ledger) as (damage, target):
            fx_transfer(
                damage,
                target,
                ledger.alice,
                ledger.bob,
                "10",
                "2",
                legs=[
                    (damage.balance(ledger.alice), D(-10)),
                    (damage.account("fx"), D(10)),
                    (damage.account("fx"), D(-20)),
                    (target.balance(ledger.bob), D(20)),
                ],
            )
            found = damage.found()
            assert found == {"wrong_postings": 1, "currencies_not_conserved": 2}
