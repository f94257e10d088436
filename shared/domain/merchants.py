"""Merchants and their balances."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from shared.domain.errors import InvalidInput
from shared.domain.fee_tiers import FeeTier
from shared.domain.limits import BalanceLimit, LimitUsage

MAX_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Balance:
    id: UUID
    merchant_id: UUID
    currency: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Merchant:
    id: UUID
    name: str
    percent_fee: Decimal
    created: datetime
    updated: datetime
    archived: bool
    # None: the flat `percent_fee` applies.
    fee_tiers: tuple[FeeTier, ...] | None = None


@dataclass(frozen=True, slots=True)
class MerchantWithBalances:
    merchant: Merchant
    balances: list[Balance]
    limits: list[LimitUsage]


@dataclass(frozen=True, slots=True)
class FeeTiersChange:
    """New fee tiers, or None: back to the flat `percent_fee`."""

    tiers: tuple[FeeTier, ...] | None


@dataclass(frozen=True, slots=True)
class MerchantChanges:
    """What a PATCH changes; None leaves a field as it is. `limits` replaces them all."""

    percent_fee: Decimal | None = None
    archived: bool | None = None
    fee_tiers: FeeTiersChange | None = None
    limits: tuple[BalanceLimit, ...] | None = None


def parse_merchant_name(value: object) -> str:
    """1-64 characters, no control characters, no '/', no leading or trailing spaces.

    Names are matched exactly (case-sensitive), so nothing is normalised here.
    """
    if not isinstance(value, str):
        raise InvalidInput("Name must be a string")
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"Name must be 1 to {MAX_NAME_LENGTH} characters long")
    if value != value.strip():
        raise InvalidInput("Name must not start or end with a space")
    if "/" in value or any(unicodedata.category(char).startswith("C") for char in value):
        raise InvalidInput("Name must not contain '/' or control characters")
    return value
