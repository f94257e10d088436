"""Bulk submission for batch importers."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.deps import DB, Caller, RequestId
from api.errors import error_responses, item_error, item_validation_error
from api.exact_json import ExactJSONRoute
from api.responses import envelope
from api.schemas import (
    BatchCreate,
    BatchItemRead,
    BatchProgressRead,
    BatchRead,
    Envelope,
    ItemError,
    TransferRead,
    parse_batch_item,
)
from shared.services import batches
from shared.services.batches import BatchItem, BatchSubmission

router = APIRouter(prefix="/batches", tags=["batches"], route_class=ExactJSONRoute)

# 10,000 items of ~200 bytes each, with room for long names and keys.
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024


def parse_items(raw_items: list[Any]) -> tuple[list[BatchItem], dict[int, ItemError]]:
    """Each item validated on its own: the valid ones, and the errors of the others."""
    valid: list[BatchItem] = []
    invalid: dict[int, ItemError] = {}
    for index, raw in enumerate(raw_items):
        try:
            key, request = parse_batch_item(raw)
        except ValidationError as error:
            invalid[index] = item_validation_error(error)
            continue
        valid.append(BatchItem(index, key, request))
    return valid, invalid


def render(submission: BatchSubmission, invalid: dict[int, ItemError]) -> BatchRead:
    items = [BatchItemRead(index=index, error=error) for index, error in invalid.items()]
    for result in submission.results:
        if result.transfer is not None:
            items.append(
                BatchItemRead(
                    index=result.index, transfer=TransferRead.model_validate(result.transfer)
                )
            )
        elif result.error is not None:
            items.append(BatchItemRead(index=result.index, error=item_error(result.error)))
    items.sort(key=lambda item: item.index)
    return BatchRead(
        id=submission.id, accepted=submission.accepted, refused=submission.refused, items=items
    )


@router.post(
    "",
    status_code=202,
    response_model=Envelope[BatchRead],
    responses=error_responses(403, 413, 422, 503),
    summary="Submit up to 10,000 transfers, deposits or withdrawals; each item is accepted or "
    "refused on its own",
)
async def submit_batch(
    body: BatchCreate, db: DB, actor: Caller, request_id: RequestId
) -> JSONResponse:
    valid, invalid = parse_items(body.transfers)
    submission = await batches.submit_batch(db, actor, valid, len(invalid), request_id)
    return envelope(render(submission, invalid), status=202)


@router.get(
    "/{batch_id}",
    response_model=Envelope[BatchProgressRead],
    responses=error_responses(404, 422, 503),
    summary="A batch's progress: how many of its transfers are pending, completed, failed",
)
async def get_batch(batch_id: uuid.UUID, db: DB, actor: Caller) -> JSONResponse:
    progress = await batches.get_batch(db, actor, batch_id)
    return envelope(BatchProgressRead.of(progress))
