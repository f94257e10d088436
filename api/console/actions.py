"""The console's actions (POST forms, CSRF-checked): change a fee, archive or unarchive, deposit,
reverse, create and revoke API keys, run the audit. Each calls the API's own service with the
operator's `Actor`; the outcome, or the domain's refusal in its own words, is a flash message
on the page it leads to."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.base import LOGIN_PATH, Action, ConsoleRoute, Editor, Operator, redirect, render
from api.console.format import BASE_PATH, money, path_part, percent
from api.console.pages import new_form_key
from shared.domain.access import Scope, parse_key_name, parse_rate_limit
from shared.domain.errors import ApiKeyNotFound, InvalidInput, LedgerError
from shared.domain.merchants import MerchantChanges
from shared.domain.money import parse_amount, parse_currency, parse_percent_fee
from shared.domain.transfers import (
    ReversalRequest,
    Transfer,
    TransferKind,
    TransferRequest,
    parse_idempotency_key,
)
from shared.services import console
from shared.services.api_keys import create_api_key, list_api_keys, revoke_api_key
from shared.services.merchants import update_merchant
from shared.services.transfers import (
    Submission,
    submit_reversal,
    submit_transfer,
    wait_until_final,
)

router = APIRouter(prefix=BASE_PATH, route_class=ConsoleRoute)

# A deposit or reversal usually settles in milliseconds: wait this long to say how it ended.
ACTION_WAIT_S = 2.0


def _merchant_path(name: str) -> str:
    return f"{BASE_PATH}/merchants/{path_part(name)}"


def _transfer_path(transfer_id: uuid.UUID | str) -> str:
    return f"{BASE_PATH}/transfers/{transfer_id}"


def _form_key(action: Action) -> str:
    """The form's Idempotency-Key (a fresh one if a hand-made form sent none)."""
    sent = action.field("idempotency_key")
    return parse_idempotency_key(sent) if sent else new_form_key()


def _outcome(transfer: Transfer) -> str:
    if transfer.state.value == "failed":
        return f"failed: {transfer.failure_reason}"
    return "completed" if transfer.state.value == "completed" else "accepted, pending"


async def _settled(request: Request, operator: Operator, submission: Submission) -> Transfer:
    waiter = request.app.state.waiter
    return await wait_until_final(
        operator.db, operator.actor, waiter, submission.transfer, ACTION_WAIT_S
    )


@router.post("/merchants/{name}/fee")
async def change_fee(name: str, action: Editor) -> Response:
    operator = action.operator
    try:
        fee = parse_percent_fee(action.field("percent_fee"))
        found = await update_merchant(
            operator.db, operator.actor, name, MerchantChanges(percent_fee=fee)
        )
        merchant = found.merchant
    except LedgerError as error:
        operator.refused(error.message)
    else:
        operator.ok(
            f"Fee of {merchant.name} is now {percent(merchant.percent_fee)}, for transfers "
            "submitted from now on."
        )
    return redirect(_merchant_path(name))


@router.post("/merchants/{name}/archive")
async def archive(name: str, action: Editor) -> Response:
    operator = action.operator
    archived = action.field("archived") == "true"
    try:
        found = await update_merchant(
            operator.db, operator.actor, name, MerchantChanges(archived=archived)
        )
        merchant = found.merchant
    except LedgerError as error:
        operator.refused(error.message)
    else:
        operator.ok(
            f"{merchant.name} is archived: it can neither send nor receive new transfers."
            if merchant.archived
            else f"{merchant.name} is active again."
        )
    return redirect(_merchant_path(name))


@router.post("/merchants/{name}/deposits")
async def deposit(request: Request, name: str, action: Editor) -> Response:
    operator = action.operator
    try:
        amount = parse_amount(action.field("amount"))
        currency = parse_currency(action.field("currency"))
        deposit = TransferRequest(None, name, amount, currency, TransferKind.DEPOSIT)
        submission = await submit_transfer(
            operator.db,
            operator.recorder,
            operator.actor,
            deposit,
            _form_key(action),
            operator.request_id,
        )
    except LedgerError as error:
        operator.refused(error.message)
        return redirect(_merchant_path(name))
    transfer = await _settled(request, operator, submission)
    again = " (this form was already sent: no second deposit)" if submission.replayed else ""
    text = f"Deposit of {money(amount)} {currency} to {name}: {_outcome(transfer)}{again}."
    (operator.refused if transfer.state.value == "failed" else operator.ok)(text)
    return redirect(_transfer_path(transfer.id))


@router.post("/transfers/{transfer_id}/reversals")
async def reverse(request: Request, transfer_id: str, action: Editor) -> Response:
    operator = action.operator
    try:
        original = uuid.UUID(transfer_id)
        sent = action.field("amount")
        amount = parse_amount(sent) if sent else None
        submission = await submit_reversal(
            operator.db,
            operator.recorder,
            operator.actor,
            ReversalRequest(original, amount),
            _form_key(action),
            operator.request_id,
        )
    except ValueError:
        operator.refused("Transfer id must be a UUID")
        return redirect(f"{BASE_PATH}/transfers")
    except LedgerError as error:
        operator.refused(error.message)
        return redirect(_transfer_path(transfer_id))
    reversal = await _settled(request, operator, submission)
    again = " (this form was already sent: no second reversal)" if submission.replayed else ""
    text = (
        f"Reversal of {money(reversal.amount)} {reversal.currency} "
        f"(fee refund {money(reversal.fee)}): {_outcome(reversal)}{again}."
    )
    (operator.refused if reversal.state.value == "failed" else operator.ok)(text)
    return redirect(_transfer_path(reversal.id))


@router.post("/keys")
async def create_key(request: Request, action: Editor) -> Response:
    operator = action.operator
    try:
        scope_value = action.field("scope") or Scope.WRITE.value
        if scope_value not in (Scope.WRITE.value, Scope.READ.value):
            raise InvalidInput('Scope must be "write" or "read"')
        rate_limit = action.field("rate_limit")
        created = await create_api_key(
            operator.db,
            operator.actor,
            parse_key_name(action.field("name")),
            action.field("merchant") or None,
            Scope(scope_value),
            parse_rate_limit(rate_limit) if rate_limit else None,
        )
    except LedgerError as error:
        operator.refused(error.message)
        return redirect(f"{BASE_PATH}/keys")
    operator.ok(f"Key {created.key.name} created. Copy its secret now: it is shown only once.")
    # Rendered, not redirected: the secret must not travel in a cookie or a URL.
    keys = await list_api_keys(operator.db, operator.actor)
    return render(request, "keys.html", operator=operator, nav="keys", keys=keys, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, action: Editor) -> Response:
    operator = action.operator
    try:
        revoked = await revoke_api_key(operator.db, operator.actor, _key_id(key_id))
    except LedgerError as error:
        operator.refused(error.message)
        return redirect(f"{BASE_PATH}/keys")
    if revoked.id == operator.actor.key_id:
        operator.session.log_out()
        operator.ok(f"Key {revoked.name} revoked: it was this session's. Log in with another.")
        return redirect(LOGIN_PATH)
    operator.ok(f"Key {revoked.name} revoked: every API process refuses it within a second.")
    return redirect(f"{BASE_PATH}/keys")


def _key_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiKeyNotFound(value) from None


@router.post("/audit")
async def run_audit(action: Editor) -> Response:
    operator = action.operator
    report = await console.run_audit(operator.db, operator.actor, operator.redis)
    checked = f"{report.transfers:,} transfers, {report.entries:,} journal entries"
    if report.ok:
        operator.ok(f"Audit passed: every invariant holds ({checked}).")
    else:
        operator.refused(f"Audit found {len(report.problems)} problem(s) ({checked}).")
    return redirect(BASE_PATH)
