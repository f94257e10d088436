"""Transfers: states, the request and its idempotency fingerprint (postings: `posting.py`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import InvalidInput
from shared.domain.money import format_amount

INSUFFICIENT_FUNDS = "Insufficient funds"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class TransferState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not TransferState.PENDING


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """What a client asked for, already validated and normalised."""

    from_merchant: str
    to_merchant: str
    amount: Decimal
    currency: str

    def fingerprint(self) -> str:
        """Same meaning, same fingerprint: `0.1` and `"0.10"`, `btc` and `BTC` compare equal."""
        canonical = "\x1f".join(
            (self.from_merchant, self.to_merchant, format_amount(self.amount), self.currency)
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Transfer:
    id: UUID
    from_merchant_id: UUID
    to_merchant_id: UUID
    amount: Decimal
    fee: Decimal
    percent_fee: Decimal
    currency: str
    idempotency_key: str
    state: TransferState
    failure_reason: str | None
    created: datetime
    processed: datetime | None
    batch_id: UUID | None = None


def parse_idempotency_key(value: str) -> str:
    """1-255 visible ASCII characters (0x21-0x7E)."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        "\x21" <= char <= "\x7e" for char in value
    ):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value
