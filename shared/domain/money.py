"""Exact money: amounts, fee percentages, currency codes and the fee rule.

Every amount is a `Decimal`; nothing here ever touches a binary float. Arithmetic runs in a
local context wide enough that no intermediate result is rounded except where a rule says so.
"""

from __future__ import annotations

import re
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)

from shared.domain.errors import InvalidInput

AMOUNT_PLACES = 8
PERCENT_PLACES = 2
RATE_PLACES = 12
AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_PLACES)
PERCENT_QUANTUM = Decimal(1).scaleb(-PERCENT_PLACES)
RATE_QUANTUM = Decimal(1).scaleb(-RATE_PLACES)
# Amounts accepted from clients have at most 20 integer digits; balances are stored as
# NUMERIC(38, 8) (30 integer digits), so even 10^9 maximal credits cannot overflow a balance.
MAX_AMOUNT = Decimal(10) ** 20
MAX_PERCENT = Decimal(100)
# FX rates (1 BASE = rate QUOTE): far above any real one (1 BTC is about 10^10 of the
# smallest-valued tokens), and within the 18 integer digits of the rate columns.
MAX_RATE = Decimal(10) ** 15

_EXACT = Context(prec=80, rounding=ROUND_HALF_UP)
# Sums of money: wide enough for any sum of balances, and any rounding at all raises instead of
# passing silently (Python's default context rounds to 28 digits; balances hold 38).
_SUMS = Context(prec=80, traps=[Inexact, Rounded, Overflow, InvalidOperation])
# ASCII only: `Decimal()` alone also takes other scripts' digits ("١٢" is 12) and "1_000".
_DECIMAL_STRING = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$", re.ASCII)
_CURRENCY = re.compile(r"^[A-Za-z0-9]{3,10}$")


def to_decimal(value: object, *, what: str) -> Decimal:
    """A finite Decimal from a JSON number (already a Decimal or int) or a decimal string.

    Booleans, floats, NaN and Infinity are refused: a float has already lost precision.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidInput(f"{what} must be a decimal number or a string")
    if isinstance(value, str):
        if not _DECIMAL_STRING.match(value):
            raise InvalidInput(f"{what} must be a decimal number")
        value = value.strip()
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise InvalidInput(f"{what} must be a decimal number") from error
    if not number.is_finite():
        raise InvalidInput(f"{what} must be a finite number")
    return number


def _has_at_most_places(number: Decimal, places: int) -> bool:
    with localcontext(_EXACT):
        return number == number.quantize(Decimal(1).scaleb(-places))


def parse_amount(value: object, *, what: str = "Amount", allow_zero: bool = False) -> Decimal:
    """A money amount: positive (or non-negative), below MAX_AMOUNT, at most 8 decimals."""
    number = to_decimal(value, what=what)
    # copy_abs() and comparisons never round: abs() would raise Overflow on 1e1000000.
    if number.copy_abs() >= MAX_AMOUNT:
        raise InvalidInput(f"{what} must be less than {MAX_AMOUNT:f}")
    if number < 0 or (number == 0 and not allow_zero):
        raise InvalidInput(f"{what} must be greater than {'or equal to ' if allow_zero else ''}0")
    if not _has_at_most_places(number, AMOUNT_PLACES):
        raise InvalidInput(f"{what} must have at most {AMOUNT_PLACES} decimal places")
    with localcontext(_EXACT):
        # "-0" is zero: no negative zero to render as "-0.00000000".
        return (number.copy_abs() if number == 0 else number).quantize(AMOUNT_QUANTUM)


def parse_percent_fee(value: object) -> Decimal:
    """A fee percentage between 0 and 100 with at most 2 decimals."""
    number = to_decimal(value, what="Percent fee")
    if number < 0 or number > MAX_PERCENT:
        raise InvalidInput("Percent fee must be between 0 and 100")
    if not _has_at_most_places(number, PERCENT_PLACES):
        raise InvalidInput(f"Percent fee must have at most {PERCENT_PLACES} decimal places")
    with localcontext(_EXACT):
        return number.copy_abs().quantize(PERCENT_QUANTUM)


def parse_rate(value: object) -> Decimal:
    """An FX rate: positive, below MAX_RATE, at most 12 decimals (SPEC: FX)."""
    number = to_decimal(value, what="Rate")
    if number <= 0:
        raise InvalidInput("Rate must be greater than 0")
    if number >= MAX_RATE:
        raise InvalidInput(f"Rate must be less than {MAX_RATE:f}")
    if not _has_at_most_places(number, RATE_PLACES):
        raise InvalidInput(f"Rate must have at most {RATE_PLACES} decimal places")
    with localcontext(_EXACT):
        return number.quantize(RATE_QUANTUM)


def parse_currency(value: object) -> str:
    """A currency code: 3-10 characters A-Z/0-9, any case accepted, stored upper-case."""
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise InvalidInput("Currency must be 3 to 10 letters or digits")
    return value.upper()


def compute_fee(amount: Decimal, percent_fee: Decimal) -> Decimal:
    """fee = amount * percent_fee / 100, rounded half-up to 8 decimals (SPEC: Money)."""
    with localcontext(_EXACT):
        return (amount * percent_fee / 100).quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP)


def compute_fee_refund(
    fee: Decimal, original: Decimal, amount: Decimal, reversed_amount: Decimal, refunded: Decimal
) -> Decimal:
    """The fee given back with a reversal of `amount` of a transfer of `original` that took
    `fee`, after `reversed_amount` of it (with `refunded` of its fee) was given back already.

    Proportional, fee × amount / original, half-up to 8 decimals, except that the reversal
    which completes the original refunds exactly what is left of the fee; never more than is
    left, however earlier reversals rounded. In integer minor units: exact at any size.
    """
    left = add_amounts(fee, negate(refunded))
    if add_amounts(reversed_amount, amount) == original:
        return left
    fee_units, amount_units, original_units = (_minor_units(x) for x in (fee, amount, original))
    halves = 2 * fee_units * amount_units + original_units
    proportional = _from_minor_units(halves // (2 * original_units))
    return min(proportional, left)


def convert_amount(amount: Decimal, rate: Decimal) -> Decimal:
    """amount × rate, rounded down to 8 decimals (SPEC: FX), for a positive amount and rate.

    In integers: the amount in units of 10^-8 times the rate in units of 10^-(rate places),
    floor-divided back to units of 10^-8. Exact at any size; nothing rounds but the rule.
    """
    if amount < 0 or rate <= 0:
        raise ValueError("a conversion needs a non-negative amount and a positive rate")
    _, digits, exponent = rate.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError("a rate must be finite")
    rate_digits = int("".join(map(str, digits)) or "0")
    scale = -exponent
    if scale >= 0:
        units = _minor_units(amount) * rate_digits // 10**scale
    else:
        units = _minor_units(amount) * rate_digits * 10**-scale
    return _from_minor_units(units)


def _minor_units(amount: Decimal) -> int:
    with localcontext(_SUMS):
        return int(amount.scaleb(AMOUNT_PLACES))


def _from_minor_units(units: int) -> Decimal:
    with localcontext(_SUMS):
        return Decimal(units).scaleb(-AMOUNT_PLACES).quantize(AMOUNT_QUANTUM)


def format_amount(amount: Decimal) -> str:
    """The wire form of an amount: a string with exactly 8 decimals ("1.50000000")."""
    with localcontext(_EXACT):
        return f"{amount.quantize(AMOUNT_QUANTUM):f}"


def format_rate(rate: Decimal) -> str:
    """The wire form of an FX rate: a string with exactly 12 decimals ("1.085000000000")."""
    with localcontext(_EXACT):
        return f"{rate.quantize(RATE_QUANTUM):f}"


def format_percent(percent: Decimal) -> str:
    with localcontext(_EXACT):
        return f"{percent.quantize(PERCENT_QUANTUM):f}"


def add_amounts(*amounts: Decimal) -> Decimal:
    """The exact sum of amounts (signed); the only way money is added or subtracted."""
    with localcontext(_SUMS):
        return sum(amounts, Decimal(0))


def negate(amount: Decimal) -> Decimal:
    """-amount, exactly (unary minus rounds to the current context's precision too)."""
    with localcontext(_SUMS):
        return -amount
