"""What a submission becomes before it is recorded: its parties looked up, the rules that need
no lock checked, its fee and conversion fixed. Shared by single submissions (recorded in groups)
and batches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.domain.errors import (
    BalanceNotFound,
    MerchantArchived,
    MerchantBalanceNotFound,
    MerchantNotFound,
    TransferPartiesNotFound,
)
from shared.domain.fee_tiers import VolumeWindow, volume_window
from shared.domain.fx import convert
from shared.domain.money import compute_fee
from shared.domain.transfers import NewTransfer, Party, TransferKind, TransferRequest


@dataclass(frozen=True, slots=True)
class PartiesWanted:
    """What submissions recorded together need read: their merchants with their balances in
    the currencies, the volume of senders whose fee may depend on it, the FX pairs' rates."""

    names: list[str]
    currencies: list[str]
    volumes: VolumeWindow
    pairs: list[tuple[str, str]]

    @classmethod
    def of(cls, requests: list[TransferRequest], now: datetime) -> PartiesWanted:
        """Requests recorded together see the same volume: none was recorded before another."""
        return cls(
            names=sorted({name for request in requests for name in request.merchant_names}),
            currencies=sorted({request.currency for request in requests}),
            volumes=volume_window(transfer_senders(requests), now),
            pairs=sorted({pair for request in requests if (pair := fx_pair(request)) is not None}),
        )


@dataclass(frozen=True, slots=True)
class Counterparties:
    """The merchants (by name) and FX rates (by pair) that `PartiesWanted` found."""

    parties: dict[str, Party]
    rates: dict[tuple[str, str], Decimal]

    def new_transfer(
        self, request: TransferRequest, scope: uuid.UUID | None, key: str, request_id: str | None
    ) -> NewTransfer:
        """The pending transfer `request` becomes, or the `LedgerError` refusing it."""
        sender, receiver = check_parties(self.parties, request)
        pair = fx_pair(request)
        rate = None if pair is None else self.rates.get(pair)
        return new_transfer(request, scope, key, sender, receiver, request_id, rate)


def check_parties(
    parties: dict[str, Party], request: TransferRequest
) -> tuple[Party | None, Party | None]:
    """The submission-time rules that need no lock (SPEC: Transfer lifecycle, step 1, and
    Movements): the merchants exist and are not archived, and the one paying has a balance in
    the currency. (sender, receiver); a deposit has no sender, a withdrawal no receiver."""
    if request.kind is not TransferKind.TRANSFER:
        (name,) = request.merchant_names
        party = parties.get(name)
        if party is None:
            raise MerchantNotFound(name)
        if party.archived:
            raise MerchantArchived(party.name)
        if request.kind is TransferKind.DEPOSIT:
            return None, party
        if request.currency not in party.balance_ids:
            raise MerchantBalanceNotFound(request.currency)
        return party, None
    sender = parties.get(request.sender or "")
    receiver = parties.get(request.receiver or "")
    if sender is None or receiver is None:
        raise TransferPartiesNotFound()
    for party in (sender, receiver):
        if party.archived:
            raise MerchantArchived(party.name)
    if request.currency not in sender.balance_ids:
        raise BalanceNotFound(request.currency)
    return sender, receiver


def new_transfer(
    request: TransferRequest,
    scope: uuid.UUID | None,
    key: str,
    sender: Party | None,
    receiver: Party | None,
    request_id: str | None,
    fx_rate: Decimal | None = None,
) -> NewTransfer:
    """A pending movement; a transfer's fee is snapshotted from the sender's fee now (with fee
    tiers, its volume's tier), and a cross-currency transfer's conversion from `fx_rate`, the
    pair's current rate (None: the pair has none, and the transfer is refused)."""
    percent_fee = Decimal(0)
    if sender is not None and request.kind is TransferKind.TRANSFER:
        percent_fee = sender.percent_fee_for(request.currency)
    conversion = None
    if request.to_currency is not None:
        conversion = convert(request.currency, request.to_currency, request.amount, fx_rate)
    return NewTransfer(
        id=uuid.uuid4(),
        idempotency_scope=scope,
        idempotency_key=key,
        request_fingerprint=request.fingerprint(),
        sender_id=None if sender is None else sender.merchant_id,
        receiver_id=None if receiver is None else receiver.merchant_id,
        amount=request.amount,
        fee=compute_fee(request.amount, percent_fee),
        percent_fee=percent_fee,
        currency=request.currency,
        request_id=request_id,
        kind=request.kind,
        conversion=conversion,
    )


def transfer_senders(requests: list[TransferRequest]) -> list[str]:
    """Whose volume the requests' fees may depend on: the senders of transfers."""
    return sorted(
        {r.sender for r in requests if r.kind is TransferKind.TRANSFER and r.sender is not None}
    )


def fx_pair(request: TransferRequest) -> tuple[str, str] | None:
    """The FX pair whose rate a cross-currency request needs (None for any other)."""
    return None if request.to_currency is None else (request.currency, request.to_currency)
