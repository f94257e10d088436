"""Transfers of every kind: states, requests and their idempotency fingerprints, the records a
submission reads and writes, the reversal's fee refund, and the listing filter (postings:
`posting.py`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import (
    IdempotencyKeyReused,
    InvalidInput,
    InvariantViolation,
    NotReversible,
    ReversalExceedsRemainder,
)
from shared.domain.fee_tiers import FeeTier, tier_percent_fee
from shared.domain.fx import Conversion, CrossCurrencyNotReversible
from shared.domain.money import add_amounts, compute_fee_refund, format_amount, negate

INSUFFICIENT_FUNDS = "Insufficient funds"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class TransferKind(StrEnum):
    TRANSFER = "transfer"  # merchant to merchant, with the sender's fee
    DEPOSIT = "deposit"  # money brought in from outside to a merchant
    WITHDRAWAL = "withdrawal"  # a merchant's money paid out
    REVERSAL = "reversal"  # money of an earlier transfer given back


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


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """What a client asked for, already validated and normalised: a transfer (both merchants),
    a deposit (no sender) or a withdrawal (no receiver). A transfer's `to_currency` is None
    unless it differs from `currency` (a cross-currency transfer): naming the same currency
    twice is an ordinary transfer."""

    sender: str | None
    receiver: str | None
    amount: Decimal
    currency: str
    kind: TransferKind = TransferKind.TRANSFER
    to_currency: str | None = None

    def __post_init__(self) -> None:
        if (self.sender is None) != (self.kind is TransferKind.DEPOSIT) or (
            self.receiver is None
        ) != (self.kind is TransferKind.WITHDRAWAL):
            raise InvariantViolation(f"a {self.kind} request with the wrong parties")
        if self.to_currency == self.currency:
            object.__setattr__(self, "to_currency", None)
        if self.to_currency is not None and self.kind is not TransferKind.TRANSFER:
            raise InvariantViolation(f"a {self.kind} request with a to_currency")

    @property
    def merchant_names(self) -> list[str]:
        return [name for name in (self.sender, self.receiver) if name is not None]

    def fingerprint(self) -> str:
        """Same meaning, same fingerprint: `0.1` and `"0.10"`, `btc` and `BTC` compare equal.

        A transfer's form predates the other kinds (stored fingerprints stay valid); the others
        lead with their kind, so one key never matches two kinds. A cross-currency transfer
        adds its `to_currency` as a fifth part (names hold no control character, so no other
        request has that form); a same-currency transfer's form is unchanged.
        """
        parts = (self.sender or "", self.receiver or "", format_amount(self.amount), self.currency)
        if self.kind is TransferKind.TRANSFER:
            if self.to_currency is not None:
                return _fingerprint(*parts, self.to_currency)
            return _fingerprint(*parts)
        return _fingerprint(self.kind.value, *parts)


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    """Give back `amount` of a completed transfer (None: all that is not reversed yet)."""

    original_id: UUID
    amount: Decimal | None

    def fingerprint(self) -> str:
        amount = "" if self.amount is None else format_amount(self.amount)
        return _fingerprint(TransferKind.REVERSAL.value, str(self.original_id), amount)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A movement of any kind. `sender_id` is None on a deposit, `receiver_id` on a withdrawal;
    `reverses` names a reversal's original; `reversed_amount`/`reversed_fee` (a `transfer`
    only, else None) total its completed reversals. A cross-currency transfer has
    `to_currency`, the `fx_rate` it was submitted with and `converted_amount`, what its
    receiver gets in `to_currency` (else all three None)."""

    id: UUID
    kind: TransferKind
    sender_id: UUID | None
    receiver_id: UUID | None
    amount: Decimal
    fee: Decimal
    percent_fee: Decimal
    currency: str
    idempotency_key: str
    state: TransferState
    failure_reason: str | None
    created: datetime
    processed: datetime | None
    reverses: UUID | None = None
    reversed_amount: Decimal | None = None
    reversed_fee: Decimal | None = None
    to_currency: str | None = None
    fx_rate: Decimal | None = None
    converted_amount: Decimal | None = None

    @property
    def merchant_ids(self) -> list[UUID]:
        """The merchants whose balances it moves (one for a deposit or a withdrawal)."""
        return [m for m in (self.sender_id, self.receiver_id) if m is not None]

    @property
    def receiver_currency(self) -> str:
        """The currency its receiver is credited in: `to_currency` across currencies."""
        return self.currency if self.to_currency is None else self.to_currency

    @property
    def balances(self) -> list[tuple[UUID, str]]:
        """The merchants' balances it moves, (merchant id, currency): what its Redis locks
        name. The receiver's is in `to_currency` on a cross-currency transfer."""
        balances = []
        if self.sender_id is not None:
            balances.append((self.sender_id, self.currency))
        if self.receiver_id is not None:
            balances.append((self.receiver_id, self.receiver_currency))
        return balances


@dataclass(frozen=True, slots=True)
class Reversible:
    """A transfer someone asks to reverse, with its reversals not final yet (which count
    against what is left to reverse, as its completed ones do)."""

    original: Transfer
    pending_amount: Decimal
    pending_fee: Decimal

    def check(self, request: ReversalRequest) -> tuple[Decimal, Decimal]:
        """The reversal's amount and fee refund as things stand, or why it is refused.

        The worker settles the refund again under the original's lock; this one is what the
        client sees while the reversal is pending.
        """
        original = self.original
        if original.to_currency is not None:
            raise CrossCurrencyNotReversible()
        if original.kind is not TransferKind.TRANSFER or original.state is not (
            TransferState.COMPLETED
        ):
            raise NotReversible()
        claimed = add_amounts(original.reversed_amount or Decimal(0), self.pending_amount)
        remainder = add_amounts(original.amount, negate(claimed))
        amount = remainder if request.amount is None else request.amount
        if remainder <= 0 or amount > remainder:
            raise ReversalExceedsRemainder()
        refunded = add_amounts(original.reversed_fee or Decimal(0), self.pending_fee)
        return amount, compute_fee_refund(original.fee, original.amount, amount, claimed, refunded)


def parse_idempotency_key(value: str) -> str:
    """1-255 visible ASCII characters (0x21-0x7E)."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        "\x21" <= char <= "\x7e" for char in value
    ):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value


@dataclass(frozen=True, slots=True)
class Party:
    """A merchant named in a transfer request, with the ids of its balances by currency (and,
    when it has fee tiers, its volume this month in each of those currencies)."""

    merchant_id: UUID
    name: str
    percent_fee: Decimal
    archived: bool
    balance_ids: dict[str, UUID]
    fee_tiers: tuple[FeeTier, ...] | None = None
    volumes: dict[str, Decimal] = field(default_factory=dict)

    def percent_fee_for(self, currency: str) -> Decimal:
        """The fee a transfer it sends in `currency` pays now: the flat one, or the tier its
        volume this month falls in."""
        if self.fee_tiers is None:
            return self.percent_fee
        return tier_percent_fee(self.fee_tiers, self.volumes.get(currency, Decimal(0)))


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    transfer: Transfer
    request_fingerprint: str

    def replay(self, request: TransferRequest | ReversalRequest) -> Transfer:
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
    sender_id: UUID | None
    receiver_id: UUID | None
    amount: Decimal
    fee: Decimal
    percent_fee: Decimal
    currency: str
    request_id: str | None
    kind: TransferKind = TransferKind.TRANSFER
    reverses: UUID | None = None
    conversion: Conversion | None = None

    @property
    def to_currency(self) -> str | None:
        return None if self.conversion is None else self.conversion.to_currency

    @property
    def fx_rate(self) -> Decimal | None:
        return None if self.conversion is None else self.conversion.rate

    @property
    def converted_amount(self) -> Decimal | None:
        return None if self.conversion is None else self.conversion.converted_amount

    @property
    def nothing_reversed(self) -> Decimal | None:
        """A new transfer's reversal totals: zero on a `transfer`, absent on other kinds."""
        return Decimal(0) if self.kind is TransferKind.TRANSFER else None


@dataclass(frozen=True, slots=True)
class TransferFilter:
    sender: str | None = None
    receiver: str | None = None
    # Either side: a cross-currency transfer matches its `currency` and its `to_currency`.
    currency: str | None = None
    state: TransferState | None = None
    batch_id: UUID | None = None
    kind: TransferKind | None = None
    # Only transfers this merchant sends or receives (a merchant key's view); None: all.
    party: UUID | None = None
