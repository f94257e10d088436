"""Volume fee tiers (SPEC Part 3): a merchant's fee as a function of what it sent this month.

A merchant's volume in a currency is the sum of `amount` of the `transfer`s it sent in that
currency that were recorded earlier in the same UTC calendar month and did not fail. A transfer
takes the tier whose `from_volume` is the highest not above that volume, for its whole amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise

from shared.domain.errors import InvalidInput
from shared.domain.money import parse_amount, parse_percent_fee

MAX_FEE_TIERS = 20


@dataclass(frozen=True, slots=True)
class FeeTier:
    from_volume: Decimal
    percent_fee: Decimal


def parse_fee_tiers(value: object) -> tuple[FeeTier, ...]:
    """Tiers as sent by a client: a non-empty list, the first from 0, strictly ascending
    `from_volume`, each fee 0-100 with at most 2 decimals."""
    if not isinstance(value, list | tuple):
        raise InvalidInput("Fee tiers must be a list of {from_volume, percent_fee}")
    if not value:
        raise InvalidInput("Fee tiers must not be empty (null returns to the flat percent_fee)")
    if len(value) > MAX_FEE_TIERS:
        raise InvalidInput(f"Fee tiers must be at most {MAX_FEE_TIERS}")
    tiers = tuple(_parse_tier(item) for item in value)
    if tiers[0].from_volume != 0:
        raise InvalidInput("The first fee tier must start from volume 0")
    if any(later.from_volume <= earlier.from_volume for earlier, later in pairwise(tiers)):
        raise InvalidInput("Fee tiers must be in strictly ascending order of from_volume")
    return tiers


def _parse_tier(item: object) -> FeeTier:
    if not isinstance(item, dict) or set(item) != {"from_volume", "percent_fee"}:
        raise InvalidInput("Each fee tier must have exactly from_volume and percent_fee")
    return FeeTier(
        parse_amount(item["from_volume"], what="From volume", allow_zero=True),
        parse_percent_fee(item["percent_fee"]),
    )


def tier_percent_fee(tiers: Sequence[FeeTier], volume: Decimal) -> Decimal:
    """The fee of the tier `volume` falls in: the last whose `from_volume` ≤ volume (a volume
    exactly at a boundary takes the tier that starts there)."""
    return [tier for tier in tiers if tier.from_volume <= volume][-1].percent_fee


@dataclass(frozen=True, slots=True)
class VolumeWindow:
    """Whose volume a submission reads — the senders of its transfers (their fee may depend
    on it) — and over which UTC month, [start, end)."""

    senders: list[str]
    start: datetime
    end: datetime


def volume_window(senders: list[str], now: datetime) -> VolumeWindow:
    return VolumeWindow(senders, *month_window(now))


def month_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month `now` is in: [first instant, first instant of the next)."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)
