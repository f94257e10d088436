"""Cross-currency transfers, the pure rules (SPEC Part 3, FX): rates, the rounded-down
conversion, the request and its fingerprint, the five-leg plan, and the refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.errors import InvalidInput, InvariantViolation
from shared.domain.fx import (
    ConvertedAmountTooLarge,
    ConvertedAmountZero,
    CrossCurrencyNotReversible,
    NoFxRate,
    check_pair,
    convert,
)
from shared.domain.money import (
    MAX_RATE,
    compute_fee,
    convert_amount,
    format_rate,
    parse_rate,
)
from shared.domain.posting import (
    AccountKind,
    Journal,
    accounts_touched,
    fee_account,
    fx_account,
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

MAX_AMOUNT_UNITS = 10**28 - 1  # 99999999999999999999.99999999 in units of 1e-8
MAX_RATE_UNITS = 10**27 - 1  # 999999999999999.999999999999 in units of 1e-12


def rate_of(units: int) -> Decimal:
    """A rate from integer units of 1e-12, built exactly."""
    return Decimal(f"{units}E-12")


def fx_transfer(
    amount: str = "100",
    fee: str = "2",
    rate: str = "0.92",
    *,
    converted: str | None = None,
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
        percent_fee=Decimal(2),
        currency="USD",
        idempotency_key="k",
        state=state,
        failure_reason=None,
        created=datetime.now(UTC),
        processed=None,
        reversed_amount=Decimal(0),
        reversed_fee=Decimal(0),
        to_currency="EUR",
        fx_rate=Decimal(rate),
        converted_amount=(
            convert_amount(Decimal(amount), Decimal(rate))
            if converted is None
            else Decimal(converted)
        ),
    )


class TestRates:
    @pytest.mark.parametrize(
        ("value", "parsed"),
        [
            ("1.085", "1.085000000000"),
            (Decimal("0.000000000001"), "0.000000000001"),
            (3, "3.000000000000"),
            (" 2.5 ", "2.500000000000"),
            ("1E+3", "1000.000000000000"),
            ("999999999999999.999999999999", "999999999999999.999999999999"),
        ],
    )
    def test_parses_and_renders_with_exactly_12_decimals(self, value: object, parsed: str) -> None:
        assert format_rate(parse_rate(value)) == parsed

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("0", "Rate must be greater than 0"),
            ("-1.5", "Rate must be greater than 0"),
            ("0.0000000000001", "Rate must have at most 12 decimal places"),
            ("1.0000000000001", "Rate must have at most 12 decimal places"),
            (MAX_RATE, f"Rate must be less than {MAX_RATE:f}"),
            ("1E+1000000", f"Rate must be less than {MAX_RATE:f}"),
            ("NaN", "Rate must be a decimal number"),
            (Decimal("NaN"), "Rate must be a finite number"),
            (Decimal("-Infinity"), "Rate must be a finite number"),
            ("abc", "Rate must be a decimal number"),
            ("", "Rate must be a decimal number"),
            (True, "Rate must be a decimal number or a string"),
            (1.5, "Rate must be a decimal number or a string"),
            (None, "Rate must be a decimal number or a string"),
        ],
    )
    def test_refuses(self, value: object, message: str) -> None:
        with pytest.raises(InvalidInput) as refused:
            parse_rate(value)
        assert refused.value.message == message

    def test_a_pair_is_two_currencies(self) -> None:
        check_pair("USD", "EUR")
        with pytest.raises(InvalidInput) as refused:
            check_pair("USD", "USD")
        assert refused.value.message == "Base and quote must be different currencies"
        assert refused.value.field == "path.quote"


class TestConversion:
    @pytest.mark.parametrize(
        ("amount", "rate", "converted"),
        [
            ("100", "0.92", "92"),
            ("1", "0.333333333333", "0.33333333"),  # 0.333333333333 rounds down
            ("0.00000001", "0.999999999999", "0"),  # 0.00000000999999999999 -> 0
            ("0.00000003", "0.5", "0.00000001"),  # 0.000000015 -> down, not half-up
            ("2.99999999", "1.000000000001", "2.99999999"),
            ("99999999999999999999.99999999", "1", "99999999999999999999.99999999"),
        ],
    )
    def test_rounds_down_to_8_decimals(self, amount: str, rate: str, converted: str) -> None:
        assert convert_amount(Decimal(amount), Decimal(rate)) == Decimal(converted)

    @given(
        st.integers(min_value=1, max_value=MAX_AMOUNT_UNITS),
        st.integers(min_value=1, max_value=MAX_RATE_UNITS),
    )
    def test_is_the_floor_of_the_exact_product(self, amount: int, rate: int) -> None:
        # In integers: amount (1e-8) x rate (1e-12) is in 1e-20; floor to 1e-8 units.
        expected = amount * rate // 10**12
        assert convert_amount(minor(amount), rate_of(rate)) == minor(expected)

    def test_refusals(self) -> None:
        with pytest.raises(NoFxRate) as no_rate:
            convert("USD", "EUR", Decimal(1), None)
        assert no_rate.value.message == "No FX rate for USD to EUR"
        with pytest.raises(ConvertedAmountZero) as zero:
            convert("USD", "EUR", Decimal("0.00000001"), Decimal("0.5"))
        assert zero.value.message == "Converted amount is zero"
        assert zero.value.field == "body.amount"
        with pytest.raises(ConvertedAmountTooLarge) as large:
            convert("USD", "EUR", Decimal("10000000000"), Decimal("10000000000"))
        assert large.value.message == "Converted amount must be less than 100000000000000000000"

    def test_a_conversion_snapshots_the_rate(self) -> None:
        conversion = convert("BTC", "USD", Decimal("0.5"), Decimal("65000.123456789012"))
        assert conversion.to_currency == "USD"
        assert conversion.rate == Decimal("65000.123456789012")
        assert conversion.converted_amount == Decimal("32500.06172839")


class TestRequest:
    def test_the_same_currency_twice_is_an_ordinary_transfer(self) -> None:
        same = TransferRequest("alice", "bob", Decimal("0.1"), "BTC", to_currency="BTC")
        assert same.to_currency is None
        assert same == TransferRequest("alice", "bob", Decimal("0.1"), "BTC")

    def test_a_same_currency_fingerprint_is_byte_identical_to_the_stored_form(self) -> None:
        # Fingerprints stored before FX must keep matching their requests.
        stored = hashlib.sha256(b"alice\x1fbob\x1f0.10000000\x1fBTC").hexdigest()
        for to_currency in (None, "BTC"):
            request = TransferRequest(
                "alice", "bob", Decimal("0.1"), "BTC", to_currency=to_currency
            )
            assert request.fingerprint() == stored

    def test_the_fingerprint_compares_to_currency(self) -> None:
        fingerprints = {
            TransferRequest("alice", "bob", Decimal(1), "USD", to_currency=to).fingerprint()
            for to in (None, "EUR", "GBP")
        }
        assert len(fingerprints) == 3
        assert (
            TransferRequest("alice", "bob", Decimal(1), "USD", to_currency="EUR").fingerprint()
            == TransferRequest(
                "alice", "bob", Decimal("1.0"), "USD", to_currency="EUR"
            ).fingerprint()
        )

    def test_only_a_transfer_converts(self) -> None:
        with pytest.raises(InvariantViolation):
            TransferRequest(None, "bob", Decimal(1), "USD", TransferKind.DEPOSIT, "EUR")


class TestPlan:
    def test_touches_the_receivers_balance_in_to_currency_and_both_fx_accounts(self) -> None:
        transfer = fx_transfer()
        assert accounts_touched(transfer) == (
            merchant_account(transfer.sender_id, "USD"),  # type: ignore[arg-type]
            merchant_account(transfer.receiver_id, "EUR"),  # type: ignore[arg-type]
            fee_account("USD", transfer.id),
            fx_account("USD"),
            fx_account("EUR"),
        )
        assert transfer.balances == [(transfer.sender_id, "USD"), (transfer.receiver_id, "EUR")]

    def test_five_legs_each_currency_summing_to_zero(self) -> None:
        transfer = fx_transfer("100", "2", "0.92")
        sender, receiver, fee, fx_usd, fx_eur = accounts_touched(transfer)
        plan = plan_movement(transfer, lambda _: Decimal("102"))
        assert plan.failure_reason is None
        assert {(p.account, p.amount) for p in plan.postings} == {
            (sender, Decimal("-102")),
            (fee, Decimal("2")),
            (fx_usd, Decimal("100")),
            (fx_eur, Decimal("-92")),
            (receiver, Decimal("92")),
        }

    def test_no_fee_leg_without_a_fee(self) -> None:
        transfer = fx_transfer("100", "0", "1.5")
        plan = plan_movement(transfer, lambda _: Decimal("100"))
        kinds = sorted(p.account.kind for p in plan.postings)
        assert kinds == [AccountKind.FX, AccountKind.FX, AccountKind.MERCHANT, AccountKind.MERCHANT]

    def test_the_funds_check_is_amount_plus_fee_in_the_senders_currency(self) -> None:
        plan = plan_movement(fx_transfer("100", "2"), lambda _: Decimal("101.99999999"))
        assert (plan.failure_reason, plan.postings) == (INSUFFICIENT_FUNDS, ())

    def test_a_transfer_without_its_conversion_is_a_bug(self) -> None:
        broken = dataclasses.replace(fx_transfer(), converted_amount=None)
        with pytest.raises(InvariantViolation):
            plan_movement(broken, lambda _: Decimal(1000))

    def test_the_journal_lets_fx_accounts_go_negative_and_checks_each_currency(self) -> None:
        sender = uuid.uuid4()
        first = fx_transfer("100", "1", "0.92", sender=sender)
        second = fx_transfer("50", "0", "0.92", sender=sender)
        keys = {key for t in (first, second) for key in accounts_touched(t)}
        accounts = locked({k: "1000" if k.merchant_id == sender else "0" for k in keys})
        journal = Journal(accounts, today=TODAY)
        for transfer in (first, second):
            assert journal.apply(transfer).failure_reason is None
        after = {balance.id: balance.amount for balance in journal.changed_balances()}
        balances = {key: after.get(account.id, account.amount) for key, account in accounts.items()}
        assert balances[fx_account("USD")] == Decimal("150")
        assert balances[fx_account("EUR")] == Decimal("-138")
        assert balances[merchant_account(sender, "USD")] == Decimal("849")

    def test_a_conversion_that_does_not_follow_the_rule_is_a_bug(self) -> None:
        wrong = fx_transfer("100", "0", "0.92", converted="92.00000001")
        journal = Journal(locked({key: "1000" for key in accounts_touched(wrong)}), today=TODAY)
        with pytest.raises(InvariantViolation):
            journal.apply(wrong)
        assert journal.plans == [] and journal.entries == []


class TestReversal:
    def test_a_cross_currency_transfer_cannot_be_reversed(self) -> None:
        original = fx_transfer(state=TransferState.COMPLETED)
        reversible = Reversible(original, Decimal(0), Decimal(0))
        with pytest.raises(CrossCurrencyNotReversible) as refused:
            reversible.check(ReversalRequest(original.id, None))
        assert refused.value.message == "Cross-currency transfers cannot be reversed"


def test_the_fee_is_on_the_amount_in_the_senders_currency() -> None:
    # SPEC: the fee rule of Part 1, on `amount`, whatever the receiver gets.
    transfer = fx_transfer("100", str(compute_fee(Decimal(100), Decimal(2))), "3")
    plan = plan_movement(transfer, lambda _: Decimal(102))
    assert sorted(p.amount for p in plan.postings) == sorted(
        Decimal(x) for x in ("-102", "2", "100", "-300", "300")
    )
