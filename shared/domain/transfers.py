"""Transfers: states, the request and its idempotency fingerprint, the records a submission
reads and writes, and the listing filter (postings: `posting.py`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import IdempotencyKeyReused, InvalidInput, InvariantViolation
from shared.domain.money import format_amount

INSUFFICIENT_FUNDS = "Insufficient funds"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class TransferState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self]


# The whole lifecycle: a pending transfer becomes completed or failed, once; a final state never
# changes. Writers move a transfer only with a compare-and-set on `PENDING` in the same
# statement, and the database refuses any change to a final transfer (a trigger) as well.
TRANSITIONS: dict[TransferState, frozenset[TransferState]] = {
    TransferState.PENDING: frozenset({TransferState.COMPLETED, TransferState.FAILED}),
    TransferState.COMPLETED: frozenset(),
    TransferState.FAILED: frozenset(),
}


def require_transition(transfer_id: UUID, current: TransferState, next_: TransferState) -> None:
    if next_ not in TRANSITIONS[current]:
        raise InvariantViolation(f"transfer {transfer_id} cannot go from {current} to {next_}")


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """What a client asked for, already validated and normalised."""

    sender: str
    receiver: str
    amount: Decimal
    currency: str

    def fingerprint(self) -> str:
        """Same meaning, same fingerprint: `0.1` and `"0.10"`, `btc` and `BTC` compare equal."""
        canonical = "\x1f".join(
            (self.sender, self.receiver, format_amount(self.amount), self.currency)
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Transfer:
    id: UUID
    sender_id: UUID
    receiver_id: UUID
    amount: Decimal
    fee: Decimal
    percent_fee: Decimal
    currency: str
    idempotency_key: str
    state: TransferState
    failure_reason: str | None
    created: datetime
    processed: datetime | None


def parse_idempotency_key(value: str) -> str:
    """1-255 visible ASCII characters (0x21-0x7E)."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        "\x21" <= char <= "\x7e" for char in value
    ):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value


@dataclass(frozen=True, slots=True)
class Party:
    """A merchant named in a transfer request, with the ids of its balances by currency."""

    merchant_id: UUID
    name: str
    percent_fee: Decimal
    archived: bool
    balance_ids: dict[str, UUID]


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    transfer: Transfer
    request_fingerprint: str

    def replay(self, request: TransferRequest) -> Transfer:
        """The stored transfer, for a request that means the same; else the key was reused."""
        if self.request_fingerprint != request.fingerprint():
            raise IdempotencyKeyReused(self.transfer.idempotency_key)
        return self.transfer


@dataclass(frozen=True, slots=True)
class NewTransfer:
    id: UUID
    idempotency_scope: UUID | None
    idempotency_key: str
    request_fingerprint: str
    sender_id: UUID
    receiver_id: UUID
    amount: Decimal
    fee: Decimal
    percent_fee: Decimal
    currency: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class TransferFilter:
    sender: str | None = None
    receiver: str | None = None
    currency: str | None = None
    state: TransferState | None = None
    batch_id: UUID | None = None
    # Only transfers this merchant sends or receives (a merchant key's view); None: all.
    party: UUID | None = None
