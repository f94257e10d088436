"""Transfers: submit (202 + Location), reverse, poll, list (deposits and withdrawals are
submitted in `movements.py` and read here like any transfer)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import DB, Caller, IdempotencyKey, SubmissionContext, Submitting, WaitPreference
from api.errors import error_responses
from api.exact_json import ExactJSONRoute
from api.responses import envelope
from api.schemas import (
    CurrencyIn,
    Envelope,
    PageEnvelope,
    ReversalCreate,
    TransferCreate,
    TransferRead,
)
from shared.domain.access import Actor
from shared.domain.transfers import Transfer, TransferFilter, TransferKind, TransferState
from shared.services import transfers

router = APIRouter(prefix="/transfers", tags=["transfers"], route_class=ExactJSONRoute)

_STRING = {"type": "string"}
SUBMIT_HEADERS = {
    "Location": {"description": "The transfer: `/v1/transfers/{id}`.", "schema": _STRING},
    "Idempotent-Replayed": {
        "description": "`true` when this key already named this request: its transfer, again.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Preference-Applied": {
        "description": "`wait=N` when `Prefer: wait=N` was honoured (N capped at 30).",
        "schema": _STRING,
    },
}


def transfer_response(
    transfer: Transfer, prefix: str, *, replayed: bool = False, wait_applied: int | None = None
) -> JSONResponse:
    """200 once final, 202 while pending; `Location` in the request's path family."""
    headers = {"Location": f"{prefix}/transfers/{transfer.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if wait_applied is not None:
        headers["Preference-Applied"] = f"wait={wait_applied}"
    status = 200 if transfer.state.is_final else 202
    return envelope(TransferRead.model_validate(transfer), status=status, headers=headers)


async def submission_response(
    submission: transfers.Submission, context: SubmissionContext, actor: Actor, wait_s: int | None
) -> JSONResponse:
    """The answer to a submission of any kind: waited on when `Prefer: wait` asks."""
    transfer = submission.transfer
    if wait_s is not None:
        transfer = await transfers.wait_until_final(
            context.db, actor, context.waiter, transfer, wait_s
        )
    return transfer_response(
        transfer, context.prefix, replayed=submission.replayed, wait_applied=wait_s
    )


def submit_responses(*errors: int) -> dict[int | str, dict[str, object]]:
    return {
        200: {
            "model": Envelope[TransferRead],
            "description": "Final (`completed` or `failed`), e.g. within `Prefer: wait=N`",
            "headers": SUBMIT_HEADERS,
        },
        202: {"description": "Recorded, `pending`: poll `Location`", "headers": SUBMIT_HEADERS},
        **error_responses(*errors),
    }


@router.post(
    "",
    status_code=202,
    response_model=Envelope[TransferRead],
    responses=submit_responses(400, 403, 404, 413, 422, 503),
    summary="Submit a transfer (recorded as pending, applied by a worker)",
)
async def submit_transfer(
    body: TransferCreate,
    key: IdempotencyKey,
    actor: Caller,
    wait_s: WaitPreference,
    context: Submitting,
) -> JSONResponse:
    request = body.to_domain()
    submission = await transfers.submit_transfer(
        context.db, context.recorder, actor, request, key, context.request_id
    )
    return await submission_response(submission, context, actor, wait_s)


@router.post(
    "/{transfer_id}/reversals",
    status_code=202,
    response_model=Envelope[TransferRead],
    responses=submit_responses(400, 403, 404, 413, 422, 503),
    summary="Reverse a completed transfer, fully or partly (admin, or the receiver's key)",
    description="A `reversal` from the original's receiver back to its sender: `amount` "
    "(default: all that is not reversed yet) plus the proportional part of the fee; the "
    "reversal that completes the original refunds exactly the fee left. 400 when the original "
    "is not a completed transfer or the amount exceeds what is left (pending reversals count).",
)
async def reverse_transfer(
    transfer_id: uuid.UUID,
    body: ReversalCreate,
    key: IdempotencyKey,
    actor: Caller,
    wait_s: WaitPreference,
    context: Submitting,
) -> JSONResponse:
    request = body.to_domain(transfer_id)
    submission = await transfers.submit_reversal(
        context.db, context.recorder, actor, request, key, context.request_id
    )
    return await submission_response(submission, context, actor, wait_s)


@router.get(
    "/{transfer_id}",
    response_model=Envelope[TransferRead],
    responses=error_responses(404, 422, 503),
    summary="A transfer, in whatever state it is",
)
async def get_transfer(transfer_id: uuid.UUID, db: DB, actor: Caller) -> JSONResponse:
    transfer = await transfers.get_transfer(db, actor, transfer_id)
    return envelope(TransferRead.model_validate(transfer))


@router.get(
    "",
    response_model=PageEnvelope[TransferRead],
    responses=error_responses(422, 503),
    summary="Transfers, newest first, filtered and paginated (a merchant key: its own)",
)
async def list_transfers(
    db: DB,
    actor: Caller,
    sender: Annotated[str | None, Query(alias="from")] = None,
    receiver: Annotated[str | None, Query(alias="to")] = None,
    currency: Annotated[CurrencyIn | None, Query()] = None,
    state: Annotated[TransferState | None, Query()] = None,
    kind: Annotated[TransferKind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    batch_id: Annotated[uuid.UUID | None, Query()] = None,
) -> JSONResponse:
    where = TransferFilter(sender, receiver, currency, state, batch_id, kind=kind)
    page = await transfers.list_transfers(db, actor, where, cursor, limit)
    result = [TransferRead.model_validate(transfer) for transfer in page.transfers]
    return envelope(result, next_cursor=page.next_cursor)
