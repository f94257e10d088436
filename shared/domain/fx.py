"""Cross-currency transfers (SPEC Part 3, FX): rates, a transfer's conversion, its refusals.

Pure. 1 BASE = rate QUOTE, for one ordered pair (no inverse is implied). A transfer with a
`to_currency` takes the rate of (currency, to_currency) at submission and keeps it: its
receiver gets `converted_amount = amount × rate`, rounded down to 8 decimals, in `to_currency`
(the arithmetic, the rate's parsing and its wire form are `money.py`'s).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.domain.errors import InvalidInput, LedgerError
from shared.domain.money import MAX_AMOUNT, convert_amount


class NoFxRate(LedgerError):
    def __init__(self, currency: str, to_currency: str) -> None:
        super().__init__(f"No FX rate for {currency} to {to_currency}")


class ConvertedAmountZero(LedgerError):
    """amount × rate rounds down to nothing: the receiver would get 0."""

    def __init__(self) -> None:
        super().__init__("Converted amount is zero", field="body.amount")


class ConvertedAmountTooLarge(LedgerError):
    """amount × rate reaches 10^20, more than any single amount may be (SPEC: Money)."""

    def __init__(self) -> None:
        super().__init__(f"Converted amount must be less than {MAX_AMOUNT:f}", field="body.amount")


class CrossCurrencyNotReversible(LedgerError):
    def __init__(self) -> None:
        super().__init__("Cross-currency transfers cannot be reversed")


@dataclass(frozen=True, slots=True)
class FxRate:
    """1 `base` = `rate` `quote`, as last set at `updated`."""

    base: str
    quote: str
    rate: Decimal
    updated: datetime


@dataclass(frozen=True, slots=True)
class Conversion:
    """A cross-currency transfer's snapshot: the rate it was submitted with and what its
    receiver gets."""

    to_currency: str
    rate: Decimal
    converted_amount: Decimal


def check_pair(base: str, quote: str) -> None:
    """A rate converts between two currencies: `PUT /fx-rates/{base}/{quote}` with one
    currency twice is refused."""
    if base == quote:
        raise InvalidInput("Base and quote must be different currencies", field="path.quote")


def convert(currency: str, to_currency: str, amount: Decimal, rate: Decimal | None) -> Conversion:
    """`amount` of `currency` converted to `to_currency` at `rate` (the current rate of the
    pair, None if it has none), or why a transfer cannot make it: no rate, or a receiver's
    amount of 0 or of 10^20 and more."""
    if rate is None:
        raise NoFxRate(currency, to_currency)
    converted = convert_amount(amount, rate)
    if converted == 0:
        raise ConvertedAmountZero()
    if converted >= MAX_AMOUNT:
        raise ConvertedAmountTooLarge()
    return Conversion(to_currency, rate, converted)
