"""Deposits and withdrawals: money into and out of the ledger, as transfers of their own kind
(pending, applied by a worker, read and listed under `/transfers`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Caller, IdempotencyKey, Submitting, WaitPreference
from api.exact_json import ExactJSONRoute
from api.routers.transfers import submission_response, submit_responses
from api.schemas import Envelope, MovementCreate, TransferRead
from shared.domain.transfers import TransferKind
from shared.services import transfers

router = APIRouter(tags=["transfers"], route_class=ExactJSONRoute)


@router.post(
    "/deposits",
    status_code=202,
    response_model=Envelope[TransferRead],
    responses=submit_responses(400, 403, 404, 413, 422, 503),
    summary="Deposit: credit a merchant with money from outside (admin)",
    description="The merchant's balance in the currency is credited (opened if missing) and "
    "the currency's issuance account debited. Never fails for funds.",
)
async def submit_deposit(
    body: MovementCreate,
    key: IdempotencyKey,
    actor: Caller,
    wait_s: WaitPreference,
    context: Submitting,
) -> JSONResponse:
    request = body.to_domain(TransferKind.DEPOSIT)
    submission = await transfers.submit_transfer(
        context.db, context.recorder, actor, request, key, context.request_id
    )
    return await submission_response(submission, context, actor, wait_s)


@router.post(
    "/withdrawals",
    status_code=202,
    response_model=Envelope[TransferRead],
    responses=submit_responses(400, 403, 404, 413, 422, 503),
    summary="Withdrawal: pay a merchant's money out (admin, or the merchant's write key)",
    description="The balance is debited (no fee) and the issuance account credited; `failed` "
    "with `Insufficient funds` when the balance cannot cover it.",
)
async def submit_withdrawal(
    body: MovementCreate,
    key: IdempotencyKey,
    actor: Caller,
    wait_s: WaitPreference,
    context: Submitting,
) -> JSONResponse:
    request = body.to_domain(TransferKind.WITHDRAWAL)
    submission = await transfers.submit_transfer(
        context.db, context.recorder, actor, request, key, context.request_id
    )
    return await submission_response(submission, context, actor, wait_s)
