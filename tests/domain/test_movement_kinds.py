"""The plans of deposits, withdrawals and reversals, and the fee-refund rule (pure)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.errors import InvariantViolation, NotReversible, ReversalExceedsRemainder
from shared.domain.money import compute_fee_refund
from shared.domain.posting import (
    AccountKind,
    Journal,
    Reversed,
    accounts_touched,
    fee_account,
    issuance_account,
    merchant_account,
    plan_movement,
)
from shared.domain.transfers import (
    INSUFFICIENT_FUNDS,
    ReversalRequest,
    Reversible,
    Transfer,
    TransferKind,
    TransferRequest,
    TransferState,
)
from tests.domain.test_posting import TODAY, locked, minor

EXCEEDS = ReversalExceedsRemainder.MESSAGE


def movement(
    kind: TransferKind,
    amount: str,
    *,
    fee: str = "0",
    sender: uuid.UUID | None = None,
    receiver: uuid.UUID | None = None,
    reverses: uuid.UUID | None = None,
) -> Transfer:
    return Transfer(
        id=uuid.uuid4(),
        kind=kind,
        sender_id=sender,
        receiver_id=receiver,
        amount=Decimal(amount),
        fee=Decimal(fee),
        percent_fee=Decimal(0),
        currency="USD",
        idempotency_key="k",
        state=TransferState.PENDING,
        failure_reason=None,
        created=datetime.now(UTC),
        processed=None,
        reverses=reverses,
    )


class TestDeposit:
    def test_credits_the_merchant_from_issuance_and_never_fails(self) -> None:
        merchant = uuid.uuid4()
        deposit = movement(TransferKind.DEPOSIT, "7", receiver=merchant)
        assert accounts_touched(deposit) == (
            merchant_account(merchant, "USD"),
            issuance_account("USD"),
        )
        plan = plan_movement(deposit, lambda _: Decimal(0))
        assert plan.failure_reason is None
        assert [(p.account.kind, p.amount) for p in plan.postings] == [
            (AccountKind.MERCHANT, Decimal(7)),
            (AccountKind.ISSUANCE, Decimal(-7)),
        ]


class TestWithdrawal:
    def test_debits_the_merchant_to_issuance(self) -> None:
        merchant = uuid.uuid4()
        withdrawal = movement(TransferKind.WITHDRAWAL, "7", sender=merchant)
        plan = plan_movement(withdrawal, lambda _: Decimal(7))
        assert [(p.account.kind, p.amount) for p in plan.postings] == [
            (AccountKind.MERCHANT, Decimal(-7)),
            (AccountKind.ISSUANCE, Decimal(7)),
        ]

    def test_fails_when_the_balance_cannot_cover_it(self) -> None:
        withdrawal = movement(TransferKind.WITHDRAWAL, "7", sender=uuid.uuid4())
        plan = plan_movement(withdrawal, lambda _: Decimal("6.99999999"))
        assert (plan.failure_reason, plan.postings) == (INSUFFICIENT_FUNDS, ())


def original_and_reversal(
    amount: str, fee: str, part: str, reversed_amount: str = "0", refunded: str = "0"
) -> tuple[Reversed, Transfer]:
    sender, receiver = uuid.uuid4(), uuid.uuid4()
    original = Reversed(
        uuid.uuid4(), Decimal(amount), Decimal(fee), Decimal(reversed_amount), Decimal(refunded)
    )
    reversal = movement(
        TransferKind.REVERSAL, part, sender=receiver, receiver=sender, reverses=original.id
    )
    return original, reversal


class TestReversal:
    def test_gives_back_amount_and_proportional_fee_from_the_originals_fee_shard(self) -> None:
        original, reversal = original_and_reversal("100", "2", "30")
        plan = plan_movement(reversal, lambda _: Decimal(1000), original)
        giver, taker, fee = accounts_touched(reversal)
        assert fee == fee_account("USD", original.id)
        assert [(p.account, p.amount) for p in plan.postings] == [
            (giver, Decimal(-30)),
            (taker, Decimal("30.6")),
            (fee, Decimal("-0.6")),
        ]
        assert plan.fee == Decimal("0.6")
        assert plan.reversed == dataclasses.replace(
            original, reversed_amount=Decimal(30), reversed_fee=Decimal("0.6")
        )

    def test_the_completing_reversal_refunds_what_is_left_of_the_fee(self) -> None:
        original, reversal = original_and_reversal(
            "0.00000003", "0.00000001", "0.00000001", reversed_amount="0.00000002"
        )
        plan = plan_movement(reversal, lambda _: Decimal(1), original)
        assert plan.fee == minor(1)  # proportional would be 0 (1/3 of a unit)

    def test_more_than_the_remainder_fails(self) -> None:
        original, reversal = original_and_reversal("100", "2", "30", reversed_amount="90")
        plan = plan_movement(reversal, lambda _: Decimal(1000), original)
        assert (plan.failure_reason, plan.postings, plan.reversed) == (EXCEEDS, (), None)

    def test_receiver_short_of_funds_fails(self) -> None:
        original, reversal = original_and_reversal("100", "2", "30")
        plan = plan_movement(reversal, lambda _: Decimal("29.99999999"), original)
        assert (plan.failure_reason, plan.reversed) == (INSUFFICIENT_FUNDS, None)

    def test_the_original_must_be_locked(self) -> None:
        _, reversal = original_and_reversal("100", "2", "30")
        with pytest.raises(InvariantViolation):
            plan_movement(reversal, lambda _: Decimal(1000), None)

    def test_reversals_in_one_group_see_each_other(self) -> None:
        original, first = original_and_reversal("100", "2", "60")
        second = dataclasses.replace(first, id=uuid.uuid4(), amount=Decimal(60))
        keys = set(accounts_touched(first))
        journal = Journal(
            locked({key: "1000" for key in keys}), {original.id: original}, today=TODAY
        )
        outcomes = [journal.apply(reversal).failure_reason for reversal in (first, second)]
        assert outcomes == [None, EXCEEDS]
        assert journal.reversed_originals() == [
            dataclasses.replace(original, reversed_amount=Decimal(60), reversed_fee=Decimal("1.2"))
        ]


class TestFeeRefund:
    @given(
        amount=st.integers(1, 10**28 - 1),
        percent=st.integers(0, 10_000),
        cuts=st.lists(st.floats(0, 1, allow_nan=False), max_size=6),
    )
    def test_reversing_everything_in_any_pieces_returns_the_whole_fee(
        self, amount: int, percent: int, cuts: list[float]
    ) -> None:
        """Any partition of the amount: each refund is the proportional one (or less, never
        more than is left) and together they are exactly the fee."""
        fee = (2 * amount * percent + 10_000) // 20_000  # the fee rule, in minor units
        # Cut points from the floats only to shape the partition; all money stays integer.
        points = sorted({int(amount * cut) for cut in cuts} - {0, amount})
        pieces = [b - a for a, b in zip([0, *points], [*points, amount], strict=True)]
        reversed_units = refunded = 0
        for piece in pieces:
            refund = compute_fee_refund(
                minor(fee), minor(amount), minor(piece), minor(reversed_units), minor(refunded)
            )
            proportional = (2 * fee * piece + amount) // (2 * amount)
            if reversed_units + piece < amount:
                assert refund == minor(min(proportional, fee - refunded))
            reversed_units += piece
            refunded += int(refund.scaleb(8))
        assert refunded == fee

    def test_half_up(self) -> None:
        # 1 unit of fee over 2 units: half a unit rounds up.
        assert compute_fee_refund(minor(1), minor(2), minor(1), minor(0), minor(0)) == minor(1)
        assert compute_fee_refund(minor(1), minor(3), minor(1), minor(0), minor(0)) == minor(0)


class TestReversibleAtSubmission:
    def reversible(
        self,
        *,
        state: TransferState = TransferState.COMPLETED,
        kind: TransferKind = TransferKind.TRANSFER,
        reversed_amount: str = "0",
        pending: str = "0",
    ) -> Reversible:
        original = dataclasses.replace(
            movement(kind, "100", fee="2", sender=uuid.uuid4(), receiver=uuid.uuid4()),
            state=state,
            reversed_amount=Decimal(reversed_amount),
            reversed_fee=Decimal(0),
        )
        return Reversible(original, Decimal(pending), Decimal(0))

    def test_defaults_to_the_remainder(self) -> None:
        reversible = self.reversible(reversed_amount="30", pending="20")
        amount, _ = reversible.check(ReversalRequest(uuid.uuid4(), None))
        assert amount == Decimal(50)

    @pytest.mark.parametrize(
        ("state", "kind"),
        [
            (TransferState.PENDING, TransferKind.TRANSFER),
            (TransferState.FAILED, TransferKind.TRANSFER),
            (TransferState.COMPLETED, TransferKind.DEPOSIT),
            (TransferState.COMPLETED, TransferKind.REVERSAL),
        ],
    )
    def test_only_completed_transfers(self, state: TransferState, kind: TransferKind) -> None:
        with pytest.raises(NotReversible):
            self.reversible(state=state, kind=kind).check(ReversalRequest(uuid.uuid4(), None))

    @pytest.mark.parametrize(
        ("reversed_amount", "pending", "part"),
        [
            ("0", "0", "100.00000001"),
            ("60", "10", "30.00000001"),
            ("100", "0", None),
            ("70", "30", None),
        ],
    )
    def test_exceeding_the_remainder(
        self, reversed_amount: str, pending: str, part: str | None
    ) -> None:
        reversible = self.reversible(reversed_amount=reversed_amount, pending=pending)
        request = ReversalRequest(uuid.uuid4(), None if part is None else Decimal(part))
        with pytest.raises(ReversalExceedsRemainder):
            reversible.check(request)


class TestRequests:
    def test_kinds_need_their_parties(self) -> None:
        with pytest.raises(InvariantViolation):
            TransferRequest("a", "b", Decimal(1), "USD", TransferKind.DEPOSIT)
        with pytest.raises(InvariantViolation):
            TransferRequest(None, "b", Decimal(1), "USD", TransferKind.WITHDRAWAL)

    def test_a_transfers_fingerprint_is_unchanged_and_kinds_never_collide(self) -> None:
        transfer = TransferRequest("a", "b", Decimal(1), "USD")
        deposit = TransferRequest(None, "b", Decimal(1), "USD", TransferKind.DEPOSIT)
        withdrawal = TransferRequest("b", None, Decimal(1), "USD", TransferKind.WITHDRAWAL)
        # The form stored before kinds existed (so old keys still replay).
        import hashlib

        legacy = hashlib.sha256(b"a\x1fb\x1f1.00000000\x1fUSD").hexdigest()
        assert transfer.fingerprint() == legacy
        fingerprints = {r.fingerprint() for r in (transfer, deposit, withdrawal)}
        assert len(fingerprints) == 3
        assert ReversalRequest(uuid.uuid4(), None).fingerprint() not in fingerprints
