"""Transfers: states, the idempotency fingerprint and the posting rule.

Pure functions only. The worker locks rows and asks `plan_postings` what to write; the plan
checks its own invariants before anything reaches the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal
from uuid import UUID

from shared.domain.errors import InvalidInput, InvariantViolation
from shared.domain.money import format_amount

INSUFFICIENT_FUNDS = "Insufficient funds"
# The fee of a transfer is credited to one of this many revenue accounts per currency,
# chosen by transfer id, so that concurrent transfers do not all wait on one fee row.
FEE_ACCOUNT_SHARDS = 16
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


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of a transfer: a signed amount on one account (negative = debit)."""

    role: Literal["sender", "receiver", "fee"]
    amount: Decimal


@dataclass(frozen=True, slots=True)
class PostingPlan:
    """What applying a transfer writes; `failure_reason` set means: write nothing but the state."""

    postings: tuple[Posting, ...]
    failure_reason: str | None


def parse_idempotency_key(value: str) -> str:
    """1-255 visible ASCII characters (0x21-0x7E)."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        "\x21" <= char <= "\x7e" for char in value
    ):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value


def fee_account_shard(transfer_id: UUID) -> int:
    return transfer_id.int % FEE_ACCOUNT_SHARDS


def plan_postings(transfer: Transfer, sender_available: Decimal) -> PostingPlan:
    """Debit the sender amount + fee, credit the receiver the amount and the fee account the fee.

    Refuses (with no postings) when the sender cannot cover amount + fee.
    """
    if transfer.state is not TransferState.PENDING:
        raise InvariantViolation(f"transfer {transfer.id} is already {transfer.state}")
    debit = transfer.amount + transfer.fee
    if sender_available < debit:
        return PostingPlan(postings=(), failure_reason=INSUFFICIENT_FUNDS)
    postings = [Posting("sender", -debit), Posting("receiver", transfer.amount)]
    if transfer.fee > 0:
        postings.append(Posting("fee", transfer.fee))
    if sum(p.amount for p in postings) != 0:
        raise InvariantViolation(f"postings of transfer {transfer.id} do not sum to zero")
    if sender_available + postings[0].amount < 0:
        raise InvariantViolation(f"transfer {transfer.id} would overdraw its sender")
    return PostingPlan(postings=tuple(postings), failure_reason=None)


BalanceKey = tuple[UUID, str]  # (merchant id, currency)


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    transfer: Transfer
    plan: PostingPlan


def plan_group(
    transfers: list[Transfer], available: dict[BalanceKey, Decimal]
) -> list[GroupOutcome]:
    """Plan many transfers in order against running balances, as if applied one by one.

    A transfer the sender cannot cover fails alone; the ones after it see the balances the
    earlier ones left. `available` is every sender's balance before the group (not mutated).
    """
    running = dict(available)
    outcomes = []
    for transfer in transfers:
        sender = (transfer.from_merchant_id, transfer.currency)
        receiver = (transfer.to_merchant_id, transfer.currency)
        plan = plan_postings(transfer, running[sender])
        if plan.failure_reason is None:
            running[sender] -= transfer.amount + transfer.fee
            running[receiver] = running.get(receiver, Decimal(0)) + transfer.amount
        outcomes.append(GroupOutcome(transfer, plan))
    return outcomes
