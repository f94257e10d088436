"""Daily and monthly limits (SPEC Part 3): a cap on what a balance is debited per UTC period.

A limit caps the sum of `amount + fee` debited from one balance by `transfer` and `withdrawal`
movements that completed in the current UTC day or month. The worker checks it under the
balance's lock against running totals kept in the same transaction as the postings: reaching a
limit exactly is allowed, exceeding it fails the movement, which then moves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum

from shared.domain.errors import InvalidInput
from shared.domain.money import add_amounts, parse_amount, parse_currency

MAX_LIMITS = 50


class LimitPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"

    @property
    def exceeded_reason(self) -> str:
        return "Daily limit exceeded" if self is LimitPeriod.DAY else "Monthly limit exceeded"


@dataclass(frozen=True, slots=True)
class BalanceLimit:
    currency: str
    period: LimitPeriod
    max_amount: Decimal


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A limit and what its balance was debited so far in the current period."""

    limit: BalanceLimit
    used: Decimal

    def exceeded_by(self, debit: Decimal) -> bool:
        return add_amounts(self.used, debit) > self.limit.max_amount

    def after(self, debit: Decimal) -> LimitUsage:
        return LimitUsage(self.limit, add_amounts(self.used, debit))


def parse_limits(value: object) -> tuple[BalanceLimit, ...]:
    """Limits as sent by a client: a list (empty removes them), one per currency and period."""
    if not isinstance(value, list | tuple):
        raise InvalidInput("Limits must be a list of {currency, period, max_amount}")
    if len(value) > MAX_LIMITS:
        raise InvalidInput(f"Limits must be at most {MAX_LIMITS}")
    limits = tuple(_parse_limit(item) for item in value)
    if len({(limit.currency, limit.period) for limit in limits}) != len(limits):
        raise InvalidInput("Only one limit per currency and period")
    return limits


def _parse_limit(item: object) -> BalanceLimit:
    if not isinstance(item, dict) or set(item) != {"currency", "period", "max_amount"}:
        raise InvalidInput("Each limit must have exactly currency, period and max_amount")
    period = item["period"]
    if period not in ("day", "month"):
        raise InvalidInput("Limit period must be day or month")
    return BalanceLimit(
        parse_currency(item["currency"]),
        LimitPeriod(period),
        parse_amount(item["max_amount"], what="Max amount"),
    )


def first_exceeded(usages: Sequence[LimitUsage], debit: Decimal) -> LimitUsage | None:
    """The limit a debit would take past its maximum (the daily one first), if any."""
    by_period = sorted(usages, key=lambda usage: usage.limit.period is LimitPeriod.MONTH)
    return next((usage for usage in by_period if usage.exceeded_by(debit)), None)


def month_start(day: date) -> date:
    return day.replace(day=1)
