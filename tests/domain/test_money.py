import contextlib
from decimal import Decimal
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.errors import InvalidInput
from shared.domain.money import (
    compute_fee,
    format_amount,
    format_percent,
    parse_amount,
    parse_currency,
    parse_percent_fee,
)


class TestParseAmount:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (Decimal("0.1"), "0.10000000"),
            ("0.10", "0.10000000"),
            (1, "1.00000000"),
            ("  2.5 ", "2.50000000"),
            (Decimal("1E+2"), "100.00000000"),
            ("0.100000000", "0.10000000"),  # trailing zeros are not extra precision
            (Decimal("1234567890.123456789").quantize(Decimal("1e-8")), "1234567890.12345679"),
        ],
    )
    def test_accepts_exact_decimals(self, given: object, expected: str) -> None:
        assert format_amount(parse_amount(given)) == expected

    def test_keeps_nineteen_significant_digits(self) -> None:
        assert parse_amount(Decimal("12345678901.23456789")) == Decimal("12345678901.23456789")

    @pytest.mark.parametrize(
        ("given", "message"),
        [
            (0.1, "must be a decimal number or a string"),
            (True, "must be a decimal number or a string"),
            (None, "must be a decimal number or a string"),
            ("NaN", "must be a decimal number"),
            ("Infinity", "must be a decimal number"),
            (Decimal("NaN"), "must be a finite number"),
            ("abc", "must be a decimal number"),
            ("", "must be a decimal number"),
            ("0", "must be greater than 0"),
            ("-1", "must be greater than 0"),
            ("0.000000001", "at most 8 decimal places"),
            (Decimal("1e400"), "must be less than"),
            ("1" * 25, "must be less than"),
            # Past the default context's Emax: abs() would raise decimal.Overflow.
            ("1e1000000", "must be less than"),
            ("-1e1000000", "must be less than"),
            (Decimal("1e1000000"), "must be less than"),
            ("1e999999999999999999", "must be less than"),
            ("1e-1000000", "at most 8 decimal places"),
            # Decimal() alone takes any script's digits: "١٢" would be 12.
            ("١٢", "must be a decimal number"),
            ("1 ", "must be a decimal number"),
            ("1_000", "must be a decimal number"),
        ],
    )
    def test_refuses(self, given: object, message: str) -> None:
        with pytest.raises(InvalidInput, match=message):
            parse_amount(given)

    @given(
        st.from_regex(r"\A[+-]?[0-9]{1,30}(\.[0-9]{0,30})?([eE][+-]?[0-9]{1,20})?\Z")
        | st.decimals(allow_nan=False, allow_infinity=False)
    )
    def test_any_finite_number_is_a_value_or_invalid_input(self, given: object) -> None:
        # Never decimal.Overflow, InvalidOperation or anything else a client could turn into a 500.
        for parse in (parse_amount, partial(parse_amount, allow_zero=True), parse_percent_fee):
            with contextlib.suppress(InvalidInput):
                parse(given)

    def test_zero_allowed_where_asked(self) -> None:
        assert parse_amount("0", allow_zero=True) == 0


class TestParsePercentFee:
    @pytest.mark.parametrize("given", ["0", "2", Decimal("2.0"), "99.99", 100])
    def test_accepts(self, given: object) -> None:
        assert 0 <= parse_percent_fee(given) <= 100

    @pytest.mark.parametrize(
        "given", ["-0.01", "100.01", "1.234", 2.0, "x", False, "1e1000000", "٢", "1e-1000000"]
    )
    def test_refuses(self, given: object) -> None:
        with pytest.raises(InvalidInput):
            parse_percent_fee(given)

    def test_renders_two_decimals(self) -> None:
        assert format_percent(parse_percent_fee(2)) == "2.00"


class TestParseCurrency:
    @pytest.mark.parametrize(
        ("given", "expected"), [("btc", "BTC"), ("USDT", "USDT"), ("a1b", "A1B")]
    )
    def test_upper_cases(self, given: str, expected: str) -> None:
        assert parse_currency(given) == expected

    @pytest.mark.parametrize("given", ["US", "ABCDEFGHIJK", "US D", "US-D", "", 123, "ÜSD"])
    def test_refuses(self, given: object) -> None:
        with pytest.raises(InvalidInput):
            parse_currency(given)


class TestComputeFee:
    @pytest.mark.parametrize(
        ("amount", "percent", "fee"),
        [
            ("100", "2", "2.00000000"),
            ("250", "2", "5.00000000"),
            ("0.1", "2", "0.00200000"),
            ("0.00000001", "50", "0.00000001"),  # 0.000000005 rounds half up
            ("0.00000001", "49.99", "0.00000000"),
            ("0.00000003", "50", "0.00000002"),  # 0.000000015 -> 0.00000002
            ("99999999999999999999.99999999", "100", "99999999999999999999.99999999"),
            ("123.45678901", "0", "0.00000000"),
        ],
    )
    def test_rounds_half_up_to_eight_places(self, amount: str, percent: str, fee: str) -> None:
        assert format_amount(compute_fee(Decimal(amount), Decimal(percent))) == fee

    @given(
        amount=st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1e19"), places=8),
        percent=st.decimals(min_value=0, max_value=100, places=2),
    )
    def test_never_more_than_half_a_unit_from_exact(
        self, amount: Decimal, percent: Decimal
    ) -> None:
        exact = amount * percent / 100  # hypothesis decimals are exact at this precision
        fee = compute_fee(amount, percent)
        assert fee.as_tuple().exponent == -8
        assert abs(fee - exact) <= Decimal("0.000000005")
