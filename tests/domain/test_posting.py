"""The posting rule and the journal: exact at any size, all or nothing, checked before writing."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.errors import InvariantViolation
from shared.domain.money import compute_fee
from shared.domain.posting import (
    FEE_ACCOUNT_SHARDS,
    AccountBalance,
    AccountKey,
    Journal,
    accounts_touched,
    fee_account,
    merchant_account,
    plan_movement,
)
from shared.domain.transfers import INSUFFICIENT_FUNDS, Transfer, TransferKind, TransferState

TODAY = date(2026, 1, 15)


def minor(units: int) -> Decimal:
    """An amount from integer minor units (1e-8), built exactly (no context arithmetic)."""
    return Decimal(f"{units}E-8")


def make_transfer(
    amount: str = "250",
    fee: str = "5",
    *,
    sender: uuid.UUID | None = None,
    receiver: uuid.UUID | None = None,
    state: TransferState = TransferState.PENDING,
) -> Transfer:
    return Transfer(
        id=uuid.uuid4(),
        kind=TransferKind.TRANSFER,
        sender_id=sender or uuid.uuid4(),
        receiver_id=receiver or uuid.uuid4(),
        amount=Decimal(amount),
        fee=Decimal(fee),
        percent_fee=Decimal("2"),
        currency="USD",
        idempotency_key="k",
        state=state,
        failure_reason=None,
        created=datetime.now(UTC),
        processed=None,
        reversed_amount=Decimal(0),
        reversed_fee=Decimal(0),
    )


def locked(balances: dict[AccountKey, str]) -> dict[AccountKey, AccountBalance]:
    return {
        key: AccountBalance(uuid.uuid4(), Decimal(amount), 0) for key, amount in balances.items()
    }


def journal_for(transfers: list[Transfer], balances: dict[uuid.UUID, str]) -> Journal:
    """A journal over every account the transfers touch; merchants not named start at 0."""
    keys = {key for transfer in transfers for key in accounts_touched(transfer)}
    return Journal(
        locked(
            {key: balances.get(key.merchant_id, "0") if key.merchant_id else "0" for key in keys}
        ),
        today=TODAY,
    )


class TestPlanMovement:
    def test_debits_amount_plus_fee_and_credits_receiver_and_fee_account(self) -> None:
        transfer = make_transfer("250", "5")
        plan = plan_movement(transfer, lambda _: Decimal("1000"))
        sender, receiver, fee = accounts_touched(transfer)
        assert plan.failure_reason is None
        assert {(p.account, p.amount) for p in plan.postings} == {
            (sender, Decimal("-255")),
            (receiver, Decimal("250")),
            (fee, Decimal("5")),
        }

    def test_no_fee_posting_when_the_fee_is_zero(self) -> None:
        transfer = make_transfer("250", "0")
        plan = plan_movement(transfer, lambda _: Decimal("250"))
        assert [p.account for p in plan.postings] == list(accounts_touched(transfer)[:2])

    def test_funds_check_includes_the_fee(self) -> None:
        plan = plan_movement(make_transfer("250", "5"), lambda _: Decimal("254.99999999"))
        assert plan.failure_reason == INSUFFICIENT_FUNDS
        assert plan.postings == ()

    def test_exact_balance_is_enough(self) -> None:
        assert (
            plan_movement(make_transfer("250", "5"), lambda _: Decimal(255)).failure_reason is None
        )

    def test_refuses_a_final_transfer(self) -> None:
        with pytest.raises(InvariantViolation):
            plan_movement(make_transfer(state=TransferState.COMPLETED), lambda _: Decimal(1000))

    def test_an_exact_cover_beyond_28_digits_is_enough(self) -> None:
        # Issue #7: amount + fee used to be rounded up in Python's 28-digit default context.
        amount = Decimal("99999999999999999999.99999999")
        fee = compute_fee(amount, Decimal("2.00"))
        held = Decimal("101999999999999999999.99999999")
        plan = plan_movement(make_transfer(str(amount), str(fee)), lambda _: held)
        assert plan.failure_reason is None
        assert plan.postings[0].amount == Decimal("-101999999999999999999.99999999")


class TestFeeAccount:
    def test_spreads_over_every_shard(self) -> None:
        shards = {fee_account("USD", uuid.uuid4()).shard for _ in range(2000)}
        assert shards == set(range(FEE_ACCOUNT_SHARDS))


class TestJournal:
    def test_later_transfers_see_what_earlier_ones_left(self) -> None:
        sender = uuid.uuid4()
        transfers = [make_transfer("40", "0", sender=sender) for _ in range(3)]
        journal = journal_for(transfers, {sender: "100"})
        plans = [journal.apply(transfer) for transfer in transfers]
        assert [plan.failure_reason for plan in plans] == [None, None, INSUFFICIENT_FUNDS]

    def test_money_received_in_the_group_can_be_spent_later_in_it(self) -> None:
        merchant = uuid.uuid4()
        incoming = make_transfer("50", "0", receiver=merchant)
        outgoing = make_transfer("50", "0", sender=merchant)
        journal = journal_for([incoming, outgoing], {incoming.sender_id: "50"})
        assert [journal.apply(t).failure_reason for t in (incoming, outgoing)] == [None, None]

    def test_entries_carry_balance_after_and_version(self) -> None:
        transfer = make_transfer("10", "1")
        journal = journal_for([transfer], {transfer.sender_id: "100"})
        journal.apply((journal.plans and transfer) or transfer)
        after = {
            entry.amount: (entry.balance_after, entry.account_version) for entry in journal.entries
        }
        assert after == {
            Decimal(-11): (Decimal(89), 1),
            Decimal(10): (Decimal(10), 1),
            Decimal(1): (Decimal(1), 1),
        }
        assert sorted(b.amount for b in journal.changed_balances()) == [1, 10, 89]

    def test_a_failed_transfer_moves_no_account(self) -> None:
        transfer = make_transfer("10", "0")
        journal = journal_for([transfer], {})
        assert journal.apply(transfer).failure_reason == INSUFFICIENT_FUNDS
        assert journal.entries == [] and journal.changed_balances() == []

    def test_a_plan_that_raises_leaves_the_journal_as_it_was(self) -> None:
        good = make_transfer("10", "0")
        journal = journal_for([good], {good.sender_id: "100"})
        unlocked = make_transfer("10", "0", sender=good.sender_id)  # its receiver: unknown
        with pytest.raises(InvariantViolation):
            journal.apply(unlocked)
        assert journal.entries == [] and journal.plans == []
        journal.apply(good)
        assert [e.balance_after for e in journal.entries][:1] == [Decimal(90)]

    def test_postings_that_do_not_sum_to_zero_are_refused(self) -> None:
        transfer = make_transfer("10", "1")
        journal = journal_for([transfer], {transfer.sender_id: "100"})
        broken = dataclasses.replace(transfer, fee=Decimal(-1))  # debit 9, credits 10 and -1
        with pytest.raises(InvariantViolation):
            journal.apply(broken)
        assert journal.entries == []

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 3),
                st.integers(0, 3),
                st.integers(1, 10**28 - 1),
                st.integers(0, 10**26),
            ),
            min_size=1,
            max_size=30,
        ),
        st.lists(st.integers(0, 10**30 - 1), min_size=4, max_size=4),
    )
    def test_matches_integer_arithmetic_past_10_to_the_21(
        self, moves: list[tuple[int, int, int, int]], opening: list[int]
    ) -> None:
        """Every balance and entry equals what exact integer arithmetic in minor units says."""
        merchants = [uuid.uuid4() for _ in range(4)]
        transfers = [
            make_transfer(
                str(minor(amount)), str(minor(fee)), sender=merchants[a], receiver=merchants[b]
            )
            for a, b, amount, fee in moves
            if a != b
        ]
        journal = journal_for(
            transfers, {m: str(minor(o)) for m, o in zip(merchants, opening, strict=True)}
        )
        model = dict(zip(merchants, opening, strict=True))
        for transfer, (a, b, amount, fee) in zip(
            transfers, [m for m in moves if m[0] != m[1]], strict=True
        ):
            plan = journal.apply(transfer)
            if model[merchants[a]] >= amount + fee:
                assert plan.failure_reason is None
                model[merchants[a]] -= amount + fee
                model[merchants[b]] += amount
            else:
                assert plan.failure_reason == INSUFFICIENT_FUNDS
        final = {e.account_id: e.balance_after for e in journal.entries}
        for merchant in merchants:
            key = merchant_account(merchant, "USD")
            balance = journal._balances.get(key)
            if balance is not None:
                assert balance.amount == minor(model[merchant])
                assert final.get(balance.id, balance.amount) == balance.amount
