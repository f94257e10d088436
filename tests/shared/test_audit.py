"""The audit: a healthy ledger with every kind of movement is clean; each way of breaking an
invariant, done to the database directly (triggers and constraints set aside inside a
transaction that is rolled back), is reported as that problem — and, where the rules allow it,
as nothing else.

The ledger under test lives in a currency of its own, written with SQL the way the workers
write (`Writer`): so its rows, fee shards and issuance account are this module's alone, and
what the audit finds wrong is measured against the same check just before the damage.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Connection, text

from shared.db import audit as audit_queries
from shared.db.audit import CurrencyTotals, LedgerCheck, check_ledger
from shared.domain.money import compute_fee
from shared.infra.database import SyncDatabase
from shared.services.audit import PROBLEMS, report
from tests.helpers import unique

pytestmark = pytest.mark.integration

D = Decimal
FEE_SHARDS = 16


def fresh_currency() -> str:
    return "A" + uuid.uuid4().hex[:9].upper()


class Writer:
    """Rows as the API and the workers write them: merchants, balances with their initial
    amount, transfers of every kind, and the postings of a completed one appended to each
    account's history (version + 1, balance_after = balance + amount)."""

    def __init__(self, connection: Connection, currency: str) -> None:
        self.connection = connection
        self.currency = currency

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.connection.execute(text(sql), params).scalar_one()

    def merchant(self, percent_fee: str = "0") -> UUID:
        merchant_id = uuid.uuid4()
        self.connection.execute(
            text("INSERT INTO merchants (id, name, percent_fee) VALUES (:id, :name, :fee)"),
            {"id": merchant_id, "name": unique("audit"), "fee": D(percent_fee)},
        )
        return merchant_id

    def account(self, kind: str, merchant_id: UUID | None = None, shard: int | None = None) -> UUID:
        """The account, opened empty if it does not exist yet."""
        found = self.connection.execute(
            text(
                "SELECT id FROM accounts WHERE kind = :kind AND currency = :currency"
                " AND merchant_id IS NOT DISTINCT FROM :merchant"
                " AND shard IS NOT DISTINCT FROM CAST(:shard AS smallint)"
            ),
            {"kind": kind, "currency": self.currency, "merchant": merchant_id, "shard": shard},
        ).scalar_one_or_none()
        if found is not None:
            return UUID(str(found))
        account_id = uuid.uuid4()
        self.connection.execute(
            text(
                "INSERT INTO accounts (id, kind, merchant_id, currency, shard, amount, version)"
                " VALUES (:id, :kind, :merchant, :currency, :shard, 0, 0)"
            ),
            {
                "id": account_id,
                "kind": kind,
                "merchant": merchant_id,
                "currency": self.currency,
                "shard": shard,
            },
        )
        return account_id

    def balance(self, merchant_id: UUID | None) -> UUID:
        assert merchant_id is not None
        return self.account("merchant", merchant_id)

    def fee_account(self, transfer_id: UUID) -> UUID:
        return self.account("fee", shard=transfer_id.int % FEE_SHARDS)

    def issuance(self) -> UUID:
        return self.account("issuance")

    def post(self, movement_id: UUID, transfer_id: UUID | None, legs: list[tuple[UUID, D]]) -> None:
        for account_id, amount in legs:
            balance, version = self.connection.execute(
                text(
                    "UPDATE accounts SET amount = amount + :amount, version = version + 1"
                    " WHERE id = :id RETURNING amount, version"
                ),
                {"id": account_id, "amount": amount},
            ).one()
            self.connection.execute(
                text(
                    "INSERT INTO entries (movement_id, transfer_id, account_id, amount,"
                    " balance_after, account_version)"
                    " VALUES (:movement, :transfer, :account, :amount, :balance, :version)"
                ),
                {
                    "movement": movement_id,
                    "transfer": transfer_id,
                    "account": account_id,
                    "amount": amount,
                    "balance": balance,
                    "version": version,
                },
            )

    def open_balance(self, merchant_id: UUID, initial: str) -> UUID:
        """A balance with its initial amount: the merchant +x, the issuance account −x."""
        account_id = self.balance(merchant_id)
        if D(initial):
            legs = [(account_id, D(initial)), (self.issuance(), -D(initial))]
            self.post(uuid.uuid4(), None, legs)
        return account_id

    def legs(
        self,
        transfer_id: UUID,
        kind: str,
        sender: UUID | None,
        receiver: UUID | None,
        amount: D,
        fee: D,
        reverses: UUID | None,
    ) -> list[tuple[UUID, D]]:
        """The postings of a completed movement, as SPEC's kinds define them."""
        if kind == "transfer":
            legs = [(self.balance(sender), -(amount + fee)), (self.balance(receiver), amount)]
            return legs + ([(self.fee_account(transfer_id), fee)] if fee else [])
        if kind == "deposit":
            return [(self.balance(receiver), amount), (self.issuance(), -amount)]
        if kind == "withdrawal":
            return [(self.balance(sender), -amount), (self.issuance(), amount)]
        assert kind == "reversal" and reverses is not None
        legs = [(self.balance(sender), -amount), (self.balance(receiver), amount + fee)]
        return legs + ([(self.fee_account(reverses), -fee)] if fee else [])

    def transfer(
        self,
        sender: UUID | None,
        receiver: UUID | None,
        amount: str,
        *,
        kind: str = "transfer",
        percent_fee: str = "0",
        fee: str | None = None,
        state: str = "completed",
        reverses: UUID | None = None,
        reversed_amount: str = "0",
        reversed_fee: str = "0",
        legs: list[tuple[UUID, D]] | None = None,
        key: str | None = None,
        transfer_id: UUID | None = None,
    ) -> UUID:
        """A transfer of `kind` in `state`; when completed, with its postings (or `legs`)."""
        transfer_id = transfer_id or uuid.uuid4()
        value = D(amount)
        fee_value = D(fee) if fee is not None else compute_fee(value, D(percent_fee))
        self.connection.execute(
            text(
                """
                INSERT INTO transfers (
                    id, idempotency_scope, idempotency_key, request_fingerprint, kind,
                    from_merchant_id, to_merchant_id, reverses, reversed_amount, reversed_fee,
                    amount, fee, percent_fee, currency, state, failure_reason, processed,
                    enqueued)
                VALUES (:id, NULL, :key, :fingerprint, :kind, :sender, :receiver, :reverses,
                        :reversed_amount, :reversed_fee, :amount, :fee, :percent_fee,
                        :currency, :state, :reason, :processed,
                        -- Never due: the session's workers (sweep, drain) must leave it pending.
                        CASE WHEN CAST(:state AS varchar) = 'pending' THEN 'infinity'::timestamptz
                             ELSE now() END)
                """
            ),
            {
                "id": transfer_id,
                "key": key or unique("audit"),
                "fingerprint": "0" * 64,
                "kind": kind,
                "sender": sender,
                "receiver": receiver,
                "reverses": reverses,
                "reversed_amount": D(reversed_amount) if kind == "transfer" else None,
                "reversed_fee": D(reversed_fee) if kind == "transfer" else None,
                "amount": value,
                "fee": fee_value,
                "percent_fee": D(percent_fee),
                "currency": self.currency,
                "state": state,
                "reason": "Insufficient funds" if state == "failed" else None,
                "processed": None if state == "pending" else datetime.now(UTC),
            },
        )
        if state == "completed":
            if legs is None:
                legs = self.legs(transfer_id, kind, sender, receiver, value, fee_value, reverses)
            self.post(transfer_id, transfer_id, legs)
            self.count_running_totals(transfer_id)
        return transfer_id

    def count_running_totals(self, transfer_id: UUID) -> None:
        """What the worker adds to its sender's running totals when a transfer completes."""
        self.connection.execute(
            text(
                """
                INSERT INTO balance_totals (merchant_id, currency, day, debited, sent)
                SELECT t.from_merchant_id, t.currency, share.day, sum(share.debited),
                       sum(share.sent)
                FROM transfers t
                CROSS JOIN LATERAL (VALUES
                    ((t.processed AT TIME ZONE 'UTC')::date, t.amount + t.fee, 0),
                    ((t.created AT TIME ZONE 'UTC')::date, 0,
                     CASE WHEN t.kind = 'transfer' THEN t.amount ELSE 0 END)
                ) AS share (day, debited, sent)
                WHERE t.id = :id AND t.kind IN ('transfer', 'withdrawal')
                GROUP BY t.from_merchant_id, t.currency, share.day
                HAVING sum(share.debited) <> 0 OR sum(share.sent) <> 0
                ON CONFLICT (merchant_id, currency, day) DO UPDATE
                    SET debited = balance_totals.debited + EXCLUDED.debited,
                        sent = balance_totals.sent + EXCLUDED.sent
                """
            ),
            {"id": transfer_id},
        )


@dataclass(frozen=True)
class Ledger:
    """The rows the tests break."""

    currency: str
    alice: UUID  # 2% fee
    bob: UUID  # no fee
    carol: UUID  # 1.5% fee, her balance opened empty
    alice_balance: UUID
    bob_balance: UUID
    carol_balance: UUID
    transfer: UUID  # alice -> bob 100, fee 2
    free_transfer: UUID  # bob -> alice 10, no fee
    failed: UUID
    pending: UUID
    deposit: UUID  # 300 to carol
    withdrawal: UUID  # 50 from bob
    partly_reversed: UUID  # alice -> carol 200, fee 4; 50 of it (fee 1) given back
    reversal: UUID
    wholly_reversed: UUID  # carol -> bob 33.33333333, fee 0.5, given back in two reversals
    last_reversal: UUID


@pytest.fixture(scope="module")
def ledger(sync_db: SyncDatabase) -> Ledger:
    """A healthy ledger with every kind of movement and state, committed."""
    with sync_db.transaction() as connection:
        w = Writer(connection, fresh_currency())
        alice, bob, carol = w.merchant("2"), w.merchant("0"), w.merchant("1.5")
        alice_balance = w.open_balance(alice, "1000")
        bob_balance = w.open_balance(bob, "500")
        carol_balance = w.open_balance(carol, "0")
        transfer = w.transfer(alice, bob, "100", percent_fee="2")
        free_transfer = w.transfer(bob, alice, "10")
        failed = w.transfer(alice, bob, "5000", percent_fee="2", state="failed")
        pending = w.transfer(alice, bob, "1", percent_fee="2", state="pending")
        deposit = w.transfer(None, carol, "300", kind="deposit")
        withdrawal = w.transfer(bob, None, "50", kind="withdrawal")
        w.transfer(carol, None, "1000000", kind="withdrawal", state="failed")
        partly = w.transfer(
            alice, carol, "200", percent_fee="2", reversed_amount="50", reversed_fee="1"
        )
        reversal = w.transfer(carol, alice, "50", kind="reversal", fee="1", reverses=partly)
        w.transfer(carol, alice, "10", kind="reversal", fee="0.2", reverses=partly, state="pending")
        # 33.33333333 × 1.5% = 0.49999999995: half-up to 0.50000000. Given back in two parts:
        # a third, refunding 0.16666667 (pro rata, rounded up), then the rest, 0.33333333.
        wholly = w.transfer(
            carol,
            bob,
            "33.33333333",
            percent_fee="1.5",
            reversed_amount="33.33333333",
            reversed_fee="0.5",
        )
        w.transfer(bob, carol, "11.11111111", kind="reversal", fee="0.16666667", reverses=wholly)
        last = w.transfer(
            bob, carol, "22.22222222", kind="reversal", fee="0.33333333", reverses=wholly
        )
        return Ledger(
            w.currency,
            alice,
            bob,
            carol,
            alice_balance,
            bob_balance,
            carol_balance,
            transfer,
            free_transfer,
            failed,
            pending,
            deposit,
            withdrawal,
            partly,
            reversal,
            wholly,
            last,
        )


class Damage(Writer):
    """A Writer inside the transaction that breaks the ledger, and what the audit found in
    that same snapshot before."""

    def __init__(self, connection: Connection, currency: str) -> None:
        super().__init__(connection, currency)
        self.before = check_ledger(connection)

    def execute(self, sql: str, **params: Any) -> None:
        self.connection.execute(text(sql), params)

    def found(self) -> dict[str, int]:
        """The problems the audit reports now that it did not before the damage."""
        after = check_ledger(self.connection).violations
        return {
            rule: count - self.before.violations.get(rule, 0)
            for rule, count in after.items()
            if count != self.before.violations.get(rule, 0)
        }

    def shift(self, account_id: UUID, transfer_id: UUID, delta: str) -> None:
        """Change the amount `transfer_id` posted to `account_id` by `delta`, and every later
        balance_after and the balance with it: the account's history stays whole."""
        version = self.scalar(
            "SELECT account_version FROM entries WHERE transfer_id = :t AND account_id = :a",
            t=transfer_id,
            a=account_id,
        )
        params = {"d": D(delta), "a": account_id, "t": transfer_id, "v": version}
        self.execute(
            "UPDATE entries SET amount = amount + :d WHERE transfer_id = :t AND account_id = :a",
            **params,
        )
        self.execute(
            "UPDATE entries SET balance_after = balance_after + :d"
            " WHERE account_id = :a AND account_version >= :v",
            **params,
        )
        self.execute("UPDATE accounts SET amount = amount + :d WHERE id = :a", **params)


@contextmanager
def broken(sync_db: SyncDatabase, ledger: Ledger) -> Iterator[Damage]:
    """A REPEATABLE READ transaction with triggers (and so foreign keys) off, rolled back at
    the end: nothing it breaks outlives the test."""
    connect = sync_db.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connect as connection:
        transaction = connection.begin()
        try:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            yield Damage(connection, ledger.currency)
        finally:
            transaction.rollback()


class TestHealthyLedger:
    def test_every_kind_and_state_is_clean(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with sync_db.transaction() as connection:
            check = check_ledger(connection)
        assert {rule: count for rule, count in check.violations.items() if count} == {}
        # 1000 + 500 brought in, 300 deposited, 50 withdrawn; the fees stay inside.
        assert check.currencies[ledger.currency] == CurrencyTotals(
            held=D(1750), issued=D(1750), brought_in=D(1500), deposited=D(300), withdrawn=D(50)
        )
        assert check.pending_transfers >= 2

    def test_the_report_is_ok(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with sync_db.transaction() as connection:
            audit = report(check_ledger(connection), datetime.now(UTC))
        assert audit.ok and audit.problems == []
        assert audit.transfers >= 13 and audit.entries >= 28

    def test_every_rule_has_its_sentence(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with sync_db.transaction() as connection:
            check = check_ledger(connection)
        assert set(check.violations) == set(PROBLEMS)


class TestBalances:
    def test_a_negative_balance(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """What the database refuses, and every worker too: a transfer that overdraws."""
        with broken(sync_db, ledger) as damage:
            damage.execute("ALTER TABLE accounts DROP CONSTRAINT ck_accounts_amount_not_negative")
            damage.transfer(ledger.bob, ledger.alice, "10000")
            assert damage.found() == {"negative_balances": 1}

    def test_an_amount_that_is_not_the_journals(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE accounts SET amount = amount + 1 WHERE id = :id", id=ledger.bob_balance
            )
            assert damage.found() == {
                "balances_not_matching_journal": 1,
                "currencies_not_conserved": 1,
            }

    def test_a_version_that_is_not_the_journals(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE accounts SET version = version + 1 WHERE id = :id", id=ledger.bob_balance
            )
            assert damage.found() == {"balances_not_matching_journal": 1}

    def test_money_in_a_balance_without_entries(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        with broken(sync_db, ledger) as damage:
            empty = damage.balance(damage.merchant())
            damage.execute("UPDATE accounts SET amount = 5 WHERE id = :id", id=empty)
            assert damage.found() == {
                "balances_not_matching_journal": 1,
                "currencies_not_conserved": 1,
            }

    def test_a_lost_entry(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """Bob's last entry deleted: his balance no longer matches the journal, and the
        reversal it belonged to misses a posting and no longer sums to zero."""
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "DELETE FROM entries WHERE account_id = :id AND account_version ="
                " (SELECT max(account_version) FROM entries WHERE account_id = :id)",
                id=ledger.bob_balance,
            )
            assert damage.found() == {
                "balances_not_matching_journal": 1,
                "unbalanced_movements": 1,
                "wrong_postings": 1,
            }


class TestHistory:
    def test_a_balance_after_that_does_not_follow(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """One balance_after in the middle of alice's history off by 0.00000001: that entry
        does not follow from the one before it, nor the next one from it."""
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE entries SET balance_after = balance_after + 0.00000001"
                " WHERE account_id = :id AND account_version = 2",
                id=ledger.alice_balance,
            )
            assert damage.found() == {"broken_balance_history": 2}

    def test_the_last_balance_after_shifted_by_four_digits(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """× 10000: the same digits (PostgreSQL hashes such numerics one bit apart)."""
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE entries SET balance_after = balance_after * 10000"
                " WHERE account_id = :id AND account_version ="
                " (SELECT version FROM accounts WHERE id = :id)",
                id=ledger.carol_balance,
            )
            assert damage.found() == {"broken_balance_history": 1}

    def test_a_balance_after_with_its_sign_flipped(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """The issuance account's last balance, −1750, made +1750 (PostgreSQL hashes a numeric
        without its sign)."""
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE entries SET balance_after = -balance_after"
                " WHERE account_id = :id AND account_version ="
                " (SELECT version FROM accounts WHERE id = :id)",
                id=damage.issuance(),
            )
            assert damage.found() == {"broken_balance_history": 1}

    def test_a_version_skipped(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """Alice's versions 1, 2, 4, ...: her history skips one, and her balance's version is
        the last one but not the count of her entries."""
        with broken(sync_db, ledger) as damage:
            for shift in (1000, -999):  # through free numbers: the versions are unique
                damage.execute(
                    "UPDATE entries SET account_version = account_version + :shift"
                    " WHERE account_id = :id AND account_version >= 3",
                    id=ledger.alice_balance,
                    shift=shift,
                )
            damage.execute(
                "UPDATE accounts SET version = version + 1 WHERE id = :id", id=ledger.alice_balance
            )
            assert damage.found() == {
                "broken_balance_history": 1,
                "balances_not_matching_journal": 1,
            }

    def test_two_breaks_that_cancel_out(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """Two of alice's balance_afters moved by +1 and −1: every sum stays what it was."""
        with broken(sync_db, ledger) as damage:
            for version, delta in ((2, "1"), (4, "-1")):
                damage.execute(
                    "UPDATE entries SET balance_after = balance_after + :delta"
                    " WHERE account_id = :id AND account_version = :version",
                    id=ledger.alice_balance,
                    version=version,
                    delta=D(delta),
                )
            assert damage.found() == {"broken_balance_history": 4}


class TestMovements:
    def test_a_movement_that_does_not_sum_to_zero(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """Bob credited 1 more by the transfer, down his history and into his balance: only the
        transfer is wrong (it sums to 1, it posts more than its amount), and the money it made
        from nothing breaks conservation."""
        with broken(sync_db, ledger) as damage:
            damage.shift(ledger.bob_balance, ledger.transfer, "1")
            assert damage.found() == {
                "unbalanced_movements": 1,
                "wrong_postings": 1,
                "currencies_not_conserved": 1,
            }

    def test_an_initial_amount_without_its_other_half(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """A balance opened with 10 whose issuance leg is a movement of its own."""
        with broken(sync_db, ledger) as damage:
            balance = damage.balance(damage.merchant())
            damage.post(uuid.uuid4(), None, [(balance, D(10))])
            damage.post(uuid.uuid4(), None, [(damage.issuance(), D(-10))])
            assert damage.found() == {"initial_amounts_not_regular": 2}

    def test_an_initial_amount_from_a_merchant(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with broken(sync_db, ledger) as damage:
            balance = damage.balance(damage.merchant())
            damage.post(uuid.uuid4(), None, [(balance, D(10)), (ledger.bob_balance, D(-10))])
            assert damage.found() == {"initial_amounts_not_regular": 1}

    def test_a_completed_transfer_without_postings(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE transfers SET state = 'completed', failure_reason = NULL WHERE id = :id",
                id=ledger.failed,
            )
            # Nor was it counted in its sender's running totals.
            assert damage.found() == {
                "completed_without_postings": 1,
                "running_totals_not_matching": 1,
            }

    @pytest.mark.parametrize("state", ["failed", "pending"])
    def test_postings_of_a_transfer_that_is_not_completed(
        self, sync_db: SyncDatabase, ledger: Ledger, state: str
    ) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE transfers SET state = CAST(:state AS varchar),"
                " processed = CASE WHEN :state = 'failed' THEN processed END,"
                " failure_reason = CASE WHEN :state = 'failed' THEN 'Insufficient funds' END"
                " WHERE id = :id",
                id=ledger.free_transfer,
                state=state,
            )
            assert damage.found() == {
                "postings_without_completion": 1,
                "running_totals_not_matching": 1,
            }

    def test_the_fee_in_another_shard(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """Balanced, every history whole: only the fee went to a shard not the transfer's."""
        with broken(sync_db, ledger) as damage:
            transfer_id = uuid.uuid4()
            other_shard = damage.account("fee", shard=(transfer_id.int + 1) % FEE_SHARDS)
            sender, receiver = damage.balance(ledger.alice), damage.balance(ledger.bob)
            legs = [(sender, D("-10.2")), (receiver, D(10)), (other_shard, D("0.2"))]
            damage.transfer(
                ledger.alice, ledger.bob, "10", percent_fee="2", legs=legs, transfer_id=transfer_id
            )
            assert damage.found() == {"wrong_postings": 1}

    @pytest.mark.parametrize(
        "postings",
        [
            pytest.param(lambda s, r, f: [(s, D(-10)), (r, D(10))], id="fee not taken"),
            pytest.param(lambda s, r, f: [(s, D("-10.2")), (r, D("10.2"))], id="fee to receiver"),
            pytest.param(
                lambda s, r, f: [(s, D("-10.2")), (r, D(10)), (f, D("0.1")), (f, D("0.1"))],
                id="fee in two postings",
            ),
            pytest.param(
                lambda s, r, f: [(r, D("-10.2")), (s, D(10)), (f, D("0.2"))], id="parties swapped"
            ),
        ],
    )
    def test_postings_that_are_not_those_of_the_kind(
        self, sync_db: SyncDatabase, ledger: Ledger, postings: Any
    ) -> None:
        with broken(sync_db, ledger) as damage:
            transfer_id = uuid.uuid4()
            sender, receiver = damage.balance(ledger.alice), damage.balance(ledger.bob)
            legs = postings(sender, receiver, damage.fee_account(transfer_id))
            damage.transfer(
                ledger.alice, ledger.bob, "10", percent_fee="2", legs=legs, transfer_id=transfer_id
            )
            assert damage.found() == {"wrong_postings": 1}

    def test_a_deposit_recorded_as_a_withdrawal(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """Its postings are a deposit's, and money the ledger says it paid out is still in."""
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE transfers SET kind = 'withdrawal', from_merchant_id = to_merchant_id,"
                " to_merchant_id = NULL WHERE id = :id",
                id=ledger.deposit,
            )
            assert damage.found() == {
                "wrong_postings": 1,
                "currencies_not_conserved": 1,
                "running_totals_not_matching": 1,
            }


class TestRunningTotals:
    @pytest.mark.parametrize("column", ["debited", "sent"])
    def test_a_total_off_by_a_unit(
        self, sync_db: SyncDatabase, ledger: Ledger, column: str
    ) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                f"UPDATE balance_totals SET {column} = {column} + 0.00000001"
                " WHERE merchant_id = :merchant AND currency = :currency",
                merchant=ledger.alice,
                currency=ledger.currency,
            )
            assert damage.found() == {"running_totals_not_matching": 1}

    def test_a_day_lost(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "DELETE FROM balance_totals WHERE merchant_id = :merchant AND currency = :currency",
                merchant=ledger.bob,
                currency=ledger.currency,
            )
            assert damage.found() == {"running_totals_not_matching": 1}

    def test_a_day_no_transfer_made(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "INSERT INTO balance_totals (merchant_id, currency, day, debited, sent)"
                " VALUES (:merchant, :currency, DATE '2001-01-01', 5, 0)",
                merchant=ledger.carol,
                currency=ledger.currency,
            )
            assert damage.found() == {"running_totals_not_matching": 1}


class TestFees:
    def test_a_fee_that_is_not_the_rule(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with broken(sync_db, ledger) as damage:
            damage.transfer(ledger.alice, ledger.bob, "10", percent_fee="2", fee="0.19999999")
            assert damage.found() == {"fees_not_following_the_rule": 1}

    def test_a_fee_rounded_down_at_the_half(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """33.33333333 × 1.5% = 0.49999999995: half-up makes it 0.50000000."""
        with broken(sync_db, ledger) as damage:
            damage.transfer(
                ledger.carol, ledger.bob, "33.33333333", percent_fee="1.5", fee="0.49999999"
            )
            assert damage.found() == {"fees_not_following_the_rule": 1}

    def test_a_big_fee_is_checked_exactly(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        """1000000000000000.00004999 × 0.01% = 100000000000.000000004999: 100000000000 exactly.
        PostgreSQL's numeric division keeps 10 decimals at that size, and rounding
        ...0.0000000050 again would make it 100000000000.00000001."""
        with broken(sync_db, ledger) as damage:
            amount = "1000000000000000.00004999"
            assert compute_fee(D(amount), D("0.01")) == D(100000000000)
            for fee in ("100000000000", "100000000000.00000001"):
                damage.transfer(
                    ledger.alice, ledger.bob, amount, percent_fee="0.01", fee=fee, state="failed"
                )
            assert damage.found() == {"fees_not_following_the_rule": 1}


class TestReversals:
    @pytest.mark.parametrize(
        ("column", "value"),
        [("from_merchant_id", "bob"), ("to_merchant_id", "bob"), ("currency", None)],
        ids=["paid by another", "paid to another", "another currency"],
    )
    def test_a_reversal_that_does_not_give_back_its_original(
        self, sync_db: SyncDatabase, ledger: Ledger, column: str, value: str | None
    ) -> None:
        with broken(sync_db, ledger) as damage:
            pending = damage.scalar(
                "SELECT id FROM transfers WHERE reverses = :o AND state = 'pending'",
                o=ledger.partly_reversed,
            )
            new = getattr(ledger, value) if value else fresh_currency()
            damage.execute(
                f"UPDATE transfers SET {column} = :new WHERE id = :id", new=new, id=pending
            )
            assert damage.found() == {"reversals_not_matching_originals": 1}

    @pytest.mark.parametrize("original", ["failed", "deposit", "reversal"])
    def test_a_reversal_of_what_cannot_be_reversed(
        self, sync_db: SyncDatabase, ledger: Ledger, original: str
    ) -> None:
        with broken(sync_db, ledger) as damage:
            target: UUID = getattr(ledger, original)
            sender, receiver = damage.connection.execute(
                text("SELECT to_merchant_id, from_merchant_id FROM transfers WHERE id = :id"),
                {"id": target},
            ).one()
            damage.transfer(
                sender or ledger.bob,
                receiver or ledger.alice,
                "1",
                kind="reversal",
                fee="0",
                reverses=target,
                state="failed",
            )
            assert damage.found() == {"reversals_not_matching_originals": 1}

    def test_reversed_totals_above_the_reversals(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """The one change the triggers allow a final transfer (totals that grow), without a
        reversal that completed."""
        with broken(sync_db, ledger) as damage:
            damage.execute("SET LOCAL session_replication_role = origin")
            damage.execute(
                "UPDATE transfers SET reversed_amount = reversed_amount + 1 WHERE id = :id",
                id=ledger.partly_reversed,
            )
            assert damage.found() == {"reversal_totals_not_matching": 1}

    def test_reversed_totals_on_a_transfer_never_reversed(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE transfers SET reversed_fee = 1 WHERE id = :id", id=ledger.transfer
            )
            assert damage.found() == {"reversal_totals_not_matching": 1}

    def test_a_whole_reversal_that_kept_part_of_the_fee(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """The last reversal refunds 0.00000001 less than what was left, its postings and the
        totals agreeing: the transfer is wholly reversed but its fee is not wholly returned."""
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE transfers SET reversed_fee = reversed_fee - 0.00000001 WHERE id = :id",
                id=ledger.wholly_reversed,
            )
            damage.execute(
                "UPDATE transfers SET fee = fee - 0.00000001 WHERE id = :id",
                id=ledger.last_reversal,
            )
            fee_account = damage.fee_account(ledger.wholly_reversed)
            damage.shift(fee_account, ledger.last_reversal, "0.00000001")
            damage.shift(ledger.carol_balance, ledger.last_reversal, "-0.00000001")
            assert damage.found() == {
                "reversal_totals_not_matching": 1,
                "fee_refunds_not_following_the_rule": 1,
            }

    @pytest.mark.parametrize("refund", ["1.5", "0.5"], ids=["above", "below"])
    def test_a_partial_refund_that_is_not_pro_rata(
        self, sync_db: SyncDatabase, ledger: Ledger, refund: str
    ) -> None:
        """Half of a transfer of 100 (fee 2) given back with a refund other than 1."""
        with broken(sync_db, ledger) as damage:
            original = damage.transfer(
                ledger.alice,
                ledger.bob,
                "100",
                percent_fee="2",
                reversed_amount="50",
                reversed_fee=refund,
            )
            damage.transfer(
                ledger.bob, ledger.alice, "50", kind="reversal", fee=refund, reverses=original
            )
            assert damage.found() == {"fee_refunds_not_following_the_rule": 1}

    def test_the_reversal_that_completes_refunds_what_is_left(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """100 (fee 0.01) given back in thirds: 0.00333333 twice (pro rata), then what is
        left, 0.00333334, above its pro rata as the rule wants."""
        with broken(sync_db, ledger) as damage:
            original = damage.transfer(
                ledger.alice,
                ledger.bob,
                "100",
                percent_fee="0.01",
                reversed_amount="100",
                reversed_fee="0.01",
            )
            parts = [("33.33333333", "0.00333333")] * 2 + [("33.33333334", "0.00333334")]
            for amount, fee in parts:
                damage.transfer(
                    ledger.bob, ledger.alice, amount, kind="reversal", fee=fee, reverses=original
                )
            assert damage.found() == {}

    def test_refunds_stop_once_the_whole_fee_is_back(
        self, sync_db: SyncDatabase, ledger: Ledger
    ) -> None:
        """0.00000008 at 62.5% (fee 0.00000005) given back a unit at a time: pro rata is 0.625
        of a unit, rounded up to 1 each time, so the fee is back after five, and the last three
        refund nothing (never more than is left)."""
        with broken(sync_db, ledger) as damage:
            original = damage.transfer(
                ledger.alice,
                ledger.bob,
                "0.00000008",
                percent_fee="62.5",
                reversed_amount="0.00000008",
                reversed_fee="0.00000005",
            )
            for fee in ["0.00000001"] * 5 + ["0"] * 3:
                damage.transfer(
                    ledger.bob,
                    ledger.alice,
                    "0.00000001",
                    kind="reversal",
                    fee=fee,
                    reverses=original,
                )
            assert damage.found() == {}


class TestChecksums:
    """A checksum that does not match stays a problem even if the exact count that should
    explain it finds nothing (a bug in one of the two): never an ok by omission."""

    def test_postings(
        self, sync_db: SyncDatabase, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        nothing = text(
            "SELECT 0 AS postings_without_completion, 0 AS unbalanced_movements,"
            " 0 AS wrong_postings, (SELECT count(*) FROM transfers WHERE state = 'completed')"
            " AS completed_with_postings"
        )
        monkeypatch.setattr(audit_queries, "_MOVEMENTS", nothing)
        with broken(sync_db, ledger) as damage:
            damage.transfer(ledger.alice, ledger.bob, "10", percent_fee="2", legs=[])
            assert damage.found() == {"postings_checksums": 1}

    def test_histories(
        self, sync_db: SyncDatabase, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        nothing = text("SELECT 0 * cardinality(CAST(:account_ids AS uuid[]))")
        monkeypatch.setattr(audit_queries, "_BROKEN_HISTORY_ENTRIES", nothing)
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "UPDATE entries SET balance_after = balance_after + 1"
                " WHERE account_id = :id AND account_version = 2",
                id=ledger.alice_balance,
            )
            assert damage.found() == {"balance_history_checksums": 1}


class TestIdempotency:
    def test_one_key_two_transfers(self, sync_db: SyncDatabase, ledger: Ledger) -> None:
        with broken(sync_db, ledger) as damage:
            damage.execute(
                "ALTER TABLE transfers"
                " DROP CONSTRAINT uq_transfers_idempotency_scope_idempotency_key"
            )
            key = damage.scalar(
                "SELECT idempotency_key FROM transfers WHERE id = :id", id=ledger.failed
            )
            damage.transfer(ledger.alice, ledger.bob, "1", percent_fee="2", state="failed", key=key)
            assert damage.found() == {"duplicate_idempotency_keys": 1}


class TestReport:
    def check(self, **violations: int) -> LedgerCheck:
        return LedgerCheck(
            transfers=3,
            entries=6,
            pending_transfers=1,
            violations=violations,
            currencies={
                "USD": CurrencyTotals(D(100), D(100), D(100)),
                "EUR": CurrencyTotals(D(5), D("4.5"), D(4), D(1), D("0.5")),
            },
        )

    def test_one_sentence_per_broken_rule_in_spec_order(self) -> None:
        audit = report(
            self.check(duplicate_idempotency_keys=1, balances_not_matching_journal=3),
            datetime.now(UTC),
        )
        assert audit.problems == [
            "3 balances do not match the journal",
            "EUR is not conserved: merchant balances + fee accounts 5.00000000, issuance"
            " account -4.50000000, initial amounts + deposits − withdrawals 4.50000000",
            "1 Idempotency-Key names more than one transfer",
        ]
        assert not audit.ok

    def test_the_result_is_what_the_api_and_the_cli_show(self) -> None:
        moment = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
        assert report(self.check(wrong_postings=2), moment).result() == {
            "ok": False,
            "checked_at": "2025-01-15T09:30:00Z",
            "transfers": 3,
            "entries": 6,
            "pending": 1,
            "problems": [
                "EUR is not conserved: merchant balances + fee accounts 5.00000000, issuance"
                " account -4.50000000, initial amounts + deposits − withdrawals 4.50000000",
                "2 completed transfers do not have exactly the postings of their kind",
            ],
        }
