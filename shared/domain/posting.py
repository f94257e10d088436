"""Posting plans: what applying a movement writes, computed exactly and checked before writing.

Pure. The worker claims a group of pending transfers, locks every account they touch, and
hands the balances to a `Journal`; the journal plans each transfer in order against the running
balances (the postings of the rule, or a failure reason) and turns the postings into journal
entries. The repository writes back exactly what the journal holds, for one transfer or a
thousand: there is one writer, and nothing is re-derived on the way to the database.

A new kind of movement is a new plan in `plan_movement`, never a new writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import InvariantViolation
from shared.domain.money import add_amounts, negate
from shared.domain.transfers import (
    INSUFFICIENT_FUNDS,
    Transfer,
    TransferState,
    require_transition,
)

# The fee of a transfer is credited to one of this many revenue accounts per currency,
# chosen by transfer id, so that concurrent transfers do not all wait on one fee row.
FEE_ACCOUNT_SHARDS = 16


class AccountKind(StrEnum):
    MERCHANT = "merchant"
    FEE = "fee"
    ISSUANCE = "issuance"


@dataclass(frozen=True, slots=True, order=True)
class AccountKey:
    """Which account: a merchant's balance in a currency, a fee shard, or the issuance account."""

    kind: AccountKind
    currency: str
    merchant_id: UUID | None = None
    shard: int | None = None

    @property
    def may_go_negative(self) -> bool:
        # The issuance account mirrors the money brought in from outside: it is negative.
        return self.kind is AccountKind.ISSUANCE


def merchant_account(merchant_id: UUID, currency: str) -> AccountKey:
    return AccountKey(AccountKind.MERCHANT, currency, merchant_id=merchant_id)


def fee_account(currency: str, transfer_id: UUID) -> AccountKey:
    return AccountKey(AccountKind.FEE, currency, shard=transfer_id.int % FEE_ACCOUNT_SHARDS)


def accounts_touched(transfer: Transfer) -> tuple[AccountKey, ...]:
    """Every account applying the transfer may post to: what the worker opens and locks."""
    return (
        merchant_account(transfer.sender_id, transfer.currency),
        merchant_account(transfer.receiver_id, transfer.currency),
        fee_account(transfer.currency, transfer.id),
    )


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of a movement: a signed amount on one account (negative = debit)."""

    account: AccountKey
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of applying one transfer: its postings, or why it moves nothing."""

    transfer_id: UUID
    postings: tuple[Posting, ...]
    failure_reason: str | None

    @property
    def state(self) -> TransferState:
        return TransferState.COMPLETED if self.failure_reason is None else TransferState.FAILED


def plan_movement(transfer: Transfer, balance_of: Callable[[AccountKey], Decimal]) -> Plan:
    """The postings of a pending transfer, given the current balances of its accounts.

    A transfer debits the sender amount + fee and credits the receiver the amount and a fee
    account the fee; it fails (moving nothing) when the sender cannot cover amount + fee.
    """
    sender, receiver, fee = accounts_touched(transfer)
    debit = add_amounts(transfer.amount, transfer.fee)
    if balance_of(sender) < debit:
        plan = Plan(transfer.id, (), INSUFFICIENT_FUNDS)
    else:
        postings = [Posting(sender, negate(debit)), Posting(receiver, transfer.amount)]
        if transfer.fee > 0:
            postings.append(Posting(fee, transfer.fee))
        plan = Plan(transfer.id, tuple(postings), None)
    require_transition(transfer.id, transfer.state, plan.state)
    return plan


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """A locked account: its id, balance and version (the number of entries on it)."""

    id: UUID
    amount: Decimal
    version: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the journal: a posting with the account's balance and version after it."""

    transfer_id: UUID
    account_id: UUID
    amount: Decimal
    balance_after: Decimal
    account_version: int


class Journal:
    """The locked accounts of a group, moved plan by plan as if transfers ran one by one."""

    def __init__(self, accounts: Mapping[AccountKey, AccountBalance]) -> None:
        self._before = dict(accounts)
        self._balances = dict(accounts)
        self.plans: list[Plan] = []
        self.entries: list[Entry] = []

    def apply(self, transfer: Transfer) -> Plan:
        """Plan the transfer against the running balances and record its entries.

        All or nothing: if planning or a check raises, the journal is as it was before.
        """
        plan = plan_movement(transfer, self._balance_of)
        if add_amounts(*(posting.amount for posting in plan.postings)) != 0:
            raise InvariantViolation(f"postings of transfer {transfer.id} do not sum to zero")
        moved: dict[AccountKey, AccountBalance] = {}
        entries = []
        for posting in plan.postings:
            before = moved.get(posting.account) or self._account(posting.account)
            after = AccountBalance(
                before.id, add_amounts(before.amount, posting.amount), before.version + 1
            )
            if after.amount < 0 and not posting.account.may_go_negative:
                raise InvariantViolation(f"transfer {transfer.id} would overdraw {after.id}")
            moved[posting.account] = after
            entries.append(
                Entry(transfer.id, after.id, posting.amount, after.amount, after.version)
            )
        self._balances.update(moved)
        self.entries.extend(entries)
        self.plans.append(plan)
        return plan

    def changed_balances(self) -> list[AccountBalance]:
        """The final state of every account that moved, to be written back."""
        return [
            balance
            for key, balance in self._balances.items()
            if balance.version != self._before[key].version
        ]

    def _account(self, key: AccountKey) -> AccountBalance:
        try:
            return self._balances[key]
        except KeyError:
            raise InvariantViolation(f"account {key} was not locked") from None

    def _balance_of(self, key: AccountKey) -> Decimal:
        return self._account(key).amount
