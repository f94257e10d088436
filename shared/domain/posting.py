"""Posting plans: what applying a movement writes, computed exactly and checked before writing.

Pure. The worker claims a group of pending transfers, locks every account they touch, and
hands the balances to a `Journal`; the journal plans each transfer in order against the running
balances (the postings of the rule, or a failure reason) and turns the postings into journal
entries. The repository writes back exactly what the journal holds, for one transfer or a
thousand: there is one writer, and nothing is re-derived on the way to the database.

A new kind of movement is a new plan in `plan_movement`, never a new writer.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import InvariantViolation, ReversalExceedsRemainder
from shared.domain.limits import LimitUsage, first_exceeded
from shared.domain.money import add_amounts, compute_fee_refund, convert_amount, negate
from shared.domain.transfers import (
    INSUFFICIENT_FUNDS,
    Transfer,
    TransferKind,
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
    FX = "fx"


@dataclass(frozen=True, slots=True, order=True)
class AccountKey:
    """Which account: a merchant's balance in a currency, a fee shard, the issuance account,
    or the FX account."""

    kind: AccountKind
    currency: str
    merchant_id: UUID | None = None
    shard: int | None = None

    @property
    def may_go_negative(self) -> bool:
        # The issuance account mirrors the money brought in from outside: it is negative. The
        # FX account is the platform's position in its currency: either sign.
        return self.kind in (AccountKind.ISSUANCE, AccountKind.FX)


def merchant_account(merchant_id: UUID, currency: str) -> AccountKey:
    return AccountKey(AccountKind.MERCHANT, currency, merchant_id=merchant_id)


def fee_account(currency: str, transfer_id: UUID) -> AccountKey:
    return AccountKey(AccountKind.FEE, currency, shard=transfer_id.int % FEE_ACCOUNT_SHARDS)


def issuance_account(currency: str) -> AccountKey:
    return AccountKey(AccountKind.ISSUANCE, currency)


def fx_account(currency: str) -> AccountKey:
    return AccountKey(AccountKind.FX, currency)


def _merchant_id(merchant_id: UUID | None) -> UUID:
    if merchant_id is None:
        raise InvariantViolation("a merchant leg without a merchant")
    return merchant_id


def accounts_touched(transfer: Transfer) -> tuple[AccountKey, ...]:
    """Every account applying the transfer may post to: what the worker opens and locks.

    transfer:   sender, receiver, the fee shard of the transfer; across currencies, the
                receiver's balance is in `to_currency`, and the FX accounts of both currencies
                follow.
    deposit:    receiver, the currency's issuance account (money from outside).
    withdrawal: sender, the issuance account (money paid out).
    reversal:   sender (the original's receiver), receiver (its sender), and the fee shard
                that took the original's fee, which refunds it.
    """
    currency = transfer.currency
    match transfer.kind:
        case TransferKind.TRANSFER:
            legs = (
                merchant_account(_merchant_id(transfer.sender_id), currency),
                merchant_account(_merchant_id(transfer.receiver_id), transfer.receiver_currency),
                fee_account(currency, transfer.id),
            )
            if transfer.to_currency is None:
                return legs
            return (*legs, fx_account(currency), fx_account(transfer.to_currency))
        case TransferKind.DEPOSIT:
            return (
                merchant_account(_merchant_id(transfer.receiver_id), currency),
                issuance_account(currency),
            )
        case TransferKind.WITHDRAWAL:
            return (
                merchant_account(_merchant_id(transfer.sender_id), currency),
                issuance_account(currency),
            )
        case TransferKind.REVERSAL:
            if transfer.reverses is None:
                raise InvariantViolation(f"reversal {transfer.id} reverses nothing")
            return (
                merchant_account(_merchant_id(transfer.sender_id), currency),
                merchant_account(_merchant_id(transfer.receiver_id), currency),
                fee_account(currency, transfer.reverses),
            )


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of a movement: a signed amount on one account (negative = debit)."""

    account: AccountKey
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Reversed:
    """A completed transfer under reversal, locked: how much of it (and of its fee) its completed
    reversals have given back so far."""

    id: UUID
    amount: Decimal
    fee: Decimal
    reversed_amount: Decimal
    reversed_fee: Decimal

    def after(self, amount: Decimal, fee_refund: Decimal) -> Reversed:
        return Reversed(
            self.id,
            self.amount,
            self.fee,
            add_amounts(self.reversed_amount, amount),
            add_amounts(self.reversed_fee, fee_refund),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of applying one transfer: its postings, or why it moves nothing.

    `fee` is the fee the transfer settles with: its own, except for a completed reversal, whose
    refund is settled under the original's lock; `reversed` is the original after it.
    """

    transfer_id: UUID
    postings: tuple[Posting, ...]
    failure_reason: str | None
    fee: Decimal
    reversed: Reversed | None = None

    @property
    def state(self) -> TransferState:
        return TransferState.COMPLETED if self.failure_reason is None else TransferState.FAILED

    def settle(self, transfer: Transfer) -> Transfer:
        """The transfer as this plan leaves it (`processed` is the database's to stamp)."""
        return dataclasses.replace(
            transfer, state=self.state, failure_reason=self.failure_reason, fee=self.fee
        )


def plan_movement(
    transfer: Transfer,
    balance_of: Callable[[AccountKey], Decimal],
    original: Reversed | None = None,
    limits: Sequence[LimitUsage] = (),
) -> Plan:
    """The postings of a pending transfer of any kind, given its accounts' current balances
    (for a reversal, its locked original; for a transfer or withdrawal, its sender's limits
    with what they used so far this period).

    A debit the merchant cannot cover fails the transfer, moving nothing: the sender's
    amount + fee, a withdrawal's amount, a reversal's amount from the original's receiver. A
    covered debit that would take a limit past its maximum fails too (the daily limit is
    named first); reaching it exactly is allowed. A deposit never fails. A reversal also
    fails when the original has less left to give back (concurrent reversals); its fee refund
    comes out of the fee shard that took the fee. A
    cross-currency transfer's receiver gets `converted_amount` in `to_currency`, through the
    FX accounts: the sender's currency's takes `amount`, the receiver's gives the converted.
    """
    legs = accounts_touched(transfer)
    amount = transfer.amount
    match transfer.kind:
        case TransferKind.TRANSFER:
            sender, receiver, fee = legs[:3]
            debit = add_amounts(amount, transfer.fee)
            postings = [Posting(sender, negate(debit)), *_credit(transfer, legs)]
            if transfer.fee > 0:
                postings.append(Posting(fee, transfer.fee))
            plan = _covered(transfer, balance_of(sender) >= debit, postings, transfer.fee)
        case TransferKind.DEPOSIT:
            receiver, issuance = legs
            postings = [Posting(receiver, amount), Posting(issuance, negate(amount))]
            plan = _covered(transfer, True, postings, transfer.fee)
        case TransferKind.WITHDRAWAL:
            sender, issuance = legs
            postings = [Posting(sender, negate(amount)), Posting(issuance, amount)]
            plan = _covered(transfer, balance_of(sender) >= amount, postings, transfer.fee)
        case TransferKind.REVERSAL:
            plan = _plan_reversal(transfer, legs, balance_of, original)
    limited = limited_debit(transfer)
    if plan.state is TransferState.COMPLETED and limits and limited is not None:
        exceeded = first_exceeded(limits, limited[1])
        if exceeded is not None:
            plan = Plan(transfer.id, (), exceeded.limit.period.exceeded_reason, transfer.fee)
    require_transition(transfer.id, transfer.state, plan.state)
    return plan


def limited_debit(transfer: Transfer) -> tuple[AccountKey, Decimal] | None:
    """The balance a movement debits in a way limits count, and by how much: amount + fee
    from the sender of a transfer or a withdrawal; None for the other kinds."""
    if transfer.kind not in (TransferKind.TRANSFER, TransferKind.WITHDRAWAL):
        return None
    sender = merchant_account(_merchant_id(transfer.sender_id), transfer.currency)
    return sender, add_amounts(transfer.amount, transfer.fee)


def _credit(transfer: Transfer, legs: tuple[AccountKey, ...]) -> list[Posting]:
    """A transfer's receiver leg: +amount, or across currencies +converted_amount, with the
    FX accounts' legs (+amount in `currency`, −converted_amount in `to_currency`)."""
    receiver = legs[1]
    if transfer.to_currency is None:
        return [Posting(receiver, transfer.amount)]
    converted, rate = transfer.converted_amount, transfer.fx_rate
    if converted is None or rate is None or len(legs) != 5:
        raise InvariantViolation(f"cross-currency transfer {transfer.id} without a conversion")
    if converted <= 0 or converted != convert_amount(transfer.amount, rate):
        raise InvariantViolation(f"cross-currency transfer {transfer.id} converted wrongly")
    fx_from, fx_to = legs[3:]
    return [
        Posting(receiver, converted),
        Posting(fx_from, transfer.amount),
        Posting(fx_to, negate(converted)),
    ]


def _covered(transfer: Transfer, covered: bool, postings: list[Posting], fee: Decimal) -> Plan:
    if not covered:
        return Plan(transfer.id, (), INSUFFICIENT_FUNDS, transfer.fee)
    return Plan(transfer.id, tuple(postings), None, fee)


def _plan_reversal(
    reversal: Transfer,
    legs: tuple[AccountKey, ...],
    balance_of: Callable[[AccountKey], Decimal],
    original: Reversed | None,
) -> Plan:
    if original is None or original.id != reversal.reverses:
        raise InvariantViolation(f"the original of reversal {reversal.id} was not locked")
    sender, receiver, fee = legs
    amount = reversal.amount
    if add_amounts(original.reversed_amount, amount) > original.amount:
        return Plan(reversal.id, (), ReversalExceedsRemainder.MESSAGE, reversal.fee)
    refund = compute_fee_refund(
        original.fee, original.amount, amount, original.reversed_amount, original.reversed_fee
    )
    postings = [Posting(sender, negate(amount)), Posting(receiver, add_amounts(amount, refund))]
    if refund > 0:
        postings.append(Posting(fee, negate(refund)))
    plan = _covered(reversal, balance_of(sender) >= amount, postings, refund)
    if plan.state is TransferState.COMPLETED:
        return Plan(plan.transfer_id, plan.postings, None, refund, original.after(amount, refund))
    return plan


def _by_currency(postings: tuple[Posting, ...]) -> list[list[Posting]]:
    groups: dict[str, list[Posting]] = {}
    for posting in postings:
        groups.setdefault(posting.account.currency, []).append(posting)
    return list(groups.values())


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


@dataclass(frozen=True, slots=True)
class BalanceTotal:
    """What a group adds to one balance's running totals of one UTC day: `debited` (completed
    that day, counted by limits) and `sent` (transfers recorded that day: volume fee tiers)."""

    merchant_id: UUID
    currency: str
    day: date
    debited: Decimal
    sent: Decimal


class Journal:
    """The locked accounts (and originals under reversal, and the senders' limits) of a group,
    moved plan by plan as if transfers ran one by one, on UTC day `today`."""

    def __init__(
        self,
        accounts: Mapping[AccountKey, AccountBalance],
        originals: Mapping[UUID, Reversed] | None = None,
        *,
        today: date,
        limits: Mapping[AccountKey, Sequence[LimitUsage]] | None = None,
    ) -> None:
        self._before = dict(accounts)
        self._balances = dict(accounts)
        self._originals = dict(originals or {})
        self._limits = dict(limits or {})
        self._today = today
        self._totals: defaultdict[tuple[UUID, str, date], list[Decimal]] = defaultdict(
            lambda: [Decimal(0), Decimal(0)]
        )
        self.plans: list[Plan] = []
        self.entries: list[Entry] = []

    def apply(self, transfer: Transfer) -> Plan:
        """Plan the transfer against the running balances and record its entries.

        All or nothing: if planning or a check raises, the journal is as it was before.
        """
        original = None if transfer.reverses is None else self._originals.get(transfer.reverses)
        debit = limited_debit(transfer)
        limits = () if debit is None else self._limits.get(debit[0], ())
        plan = plan_movement(transfer, self._balance_of, original, limits)
        # In each currency (a conversion posts in two; anything else in one).
        groups = [plan.postings] if transfer.to_currency is None else _by_currency(plan.postings)
        if any(add_amounts(*(posting.amount for posting in group)) != 0 for group in groups):
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
        if plan.reversed is not None:
            self._originals[plan.reversed.id] = plan.reversed
        if debit is not None and plan.state is TransferState.COMPLETED:
            self._count(transfer, *debit)
        return plan

    def _count(self, transfer: Transfer, sender: AccountKey, debit: Decimal) -> None:
        """Add a completed debit to its sender's usage and running totals."""
        if sender in self._limits:
            self._limits[sender] = [usage.after(debit) for usage in self._limits[sender]]
        merchant_id = _merchant_id(sender.merchant_id)
        debited = self._totals[(merchant_id, sender.currency, self._today)]
        debited[0] = add_amounts(debited[0], debit)
        if transfer.kind is TransferKind.TRANSFER:
            recorded = transfer.created.astimezone(UTC).date()
            sent = self._totals[(merchant_id, sender.currency, recorded)]
            sent[1] = add_amounts(sent[1], transfer.amount)

    def balance_totals(self) -> list[BalanceTotal]:
        """What the group adds to the balances' running totals, one row per balance and day."""
        return [
            BalanceTotal(merchant_id, currency, day, debited, sent)
            for (merchant_id, currency, day), (debited, sent) in sorted(self._totals.items())
        ]

    def reversed_originals(self) -> list[Reversed]:
        """The final reversal totals of every original a plan of the group reversed."""
        touched = {plan.reversed.id for plan in self.plans if plan.reversed is not None}
        return [self._originals[original_id] for original_id in sorted(touched)]

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
