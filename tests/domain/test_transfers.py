import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.domain.errors import InvalidInput, InvariantViolation
from shared.domain.merchants import parse_merchant_name
from shared.domain.transfers import (
    FEE_ACCOUNT_SHARDS,
    INSUFFICIENT_FUNDS,
    Transfer,
    TransferRequest,
    TransferState,
    fee_account_shard,
    parse_idempotency_key,
    plan_group,
    plan_postings,
)


def make_transfer(
    amount: str = "250", fee: str = "5", state: TransferState = TransferState.PENDING
) -> Transfer:
    return Transfer(
        id=uuid.uuid4(),
        from_merchant_id=uuid.uuid4(),
        to_merchant_id=uuid.uuid4(),
        amount=Decimal(amount),
        fee=Decimal(fee),
        percent_fee=Decimal("2"),
        currency="USD",
        idempotency_key="k",
        state=state,
        failure_reason=None,
        created=datetime.now(UTC),
        processed=None,
    )


class TestTransferState:
    def test_only_pending_is_not_final(self) -> None:
        assert [state for state in TransferState if not state.is_final] == [TransferState.PENDING]


class TestPlanPostings:
    def test_debits_amount_plus_fee_and_credits_receiver_and_fee_account(self) -> None:
        plan = plan_postings(make_transfer("250", "5"), Decimal("1000"))
        assert plan.failure_reason is None
        assert {(p.role, p.amount) for p in plan.postings} == {
            ("sender", Decimal("-255")),
            ("receiver", Decimal("250")),
            ("fee", Decimal("5")),
        }
        assert sum(p.amount for p in plan.postings) == 0

    def test_no_fee_posting_when_the_fee_is_zero(self) -> None:
        plan = plan_postings(make_transfer("250", "0"), Decimal("250"))
        assert [p.role for p in plan.postings] == ["sender", "receiver"]

    def test_funds_check_includes_the_fee(self) -> None:
        plan = plan_postings(make_transfer("250", "5"), Decimal("254.99999999"))
        assert plan.failure_reason == INSUFFICIENT_FUNDS
        assert plan.postings == ()

    def test_exact_balance_is_enough(self) -> None:
        assert plan_postings(make_transfer("250", "5"), Decimal("255")).failure_reason is None

    def test_refuses_a_final_transfer(self) -> None:
        with pytest.raises(InvariantViolation):
            plan_postings(make_transfer(state=TransferState.COMPLETED), Decimal("1000"))


class TestFingerprint:
    def test_same_meaning_same_fingerprint(self) -> None:
        first = TransferRequest("a", "b", Decimal("0.1"), "BTC")
        second = TransferRequest("a", "b", Decimal("0.10000000"), "BTC")
        assert first.fingerprint() == second.fingerprint()

    @pytest.mark.parametrize(
        "other",
        [
            TransferRequest("a", "c", Decimal("0.1"), "BTC"),
            TransferRequest("b", "a", Decimal("0.1"), "BTC"),
            TransferRequest("a", "b", Decimal("0.2"), "BTC"),
            TransferRequest("a", "b", Decimal("0.1"), "ETH"),
        ],
    )
    def test_different_request_different_fingerprint(self, other: TransferRequest) -> None:
        assert TransferRequest("a", "b", Decimal("0.1"), "BTC").fingerprint() != other.fingerprint()


class TestIdempotencyKey:
    @pytest.mark.parametrize("key", ["a", "abc-123_XYZ", "~" * 255, "!"])
    def test_accepts_visible_ascii(self, key: str) -> None:
        assert parse_idempotency_key(key) == key

    @pytest.mark.parametrize("key", ["", "a b", "a" * 256, "ключ", "tab\t", "\x7f"])
    def test_refuses(self, key: str) -> None:
        with pytest.raises(InvalidInput):
            parse_idempotency_key(key)


class TestFeeShard:
    def test_spreads_over_every_shard(self) -> None:
        shards = {fee_account_shard(uuid.uuid4()) for _ in range(2000)}
        assert shards == set(range(FEE_ACCOUNT_SHARDS))


class TestMerchantName:
    @pytest.mark.parametrize("name", ["1 merchant", "ryan_gosling", "Ünïcode", "x" * 64])
    def test_accepts(self, name: str) -> None:
        assert parse_merchant_name(name) == name

    @pytest.mark.parametrize("name", ["", " lead", "trail ", "a/b", "bell\x07", "x" * 65, 5])
    def test_refuses(self, name: object) -> None:
        with pytest.raises(InvalidInput):
            parse_merchant_name(name)


class TestPlanGroup:
    def test_later_transfers_see_what_earlier_ones_left(self) -> None:
        first, second, third = (make_transfer("40", "0") for _ in range(3))
        sender = first.from_merchant_id
        second = dataclasses.replace(second, from_merchant_id=sender)
        third = dataclasses.replace(third, from_merchant_id=sender)
        available = {(sender, "USD"): Decimal("100")}
        outcomes = plan_group([first, second, third], available)
        assert [o.plan.failure_reason for o in outcomes] == [None, None, INSUFFICIENT_FUNDS]
        assert available == {(sender, "USD"): Decimal("100")}  # not mutated

    def test_money_received_in_the_group_can_be_spent_later_in_it(self) -> None:
        incoming = make_transfer("50", "0")
        merchant = incoming.to_merchant_id
        outgoing = dataclasses.replace(make_transfer("50", "0"), from_merchant_id=merchant)
        available = {
            (incoming.from_merchant_id, "USD"): Decimal("50"),
            (merchant, "USD"): Decimal(0),
        }
        outcomes = plan_group([incoming, outgoing], available)
        assert [o.plan.failure_reason for o in outcomes] == [None, None]
