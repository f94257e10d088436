"""The console's pages (GET): overview, merchants, transfers, batches, API keys. Each parses its
query, calls one service with the operator's `Actor`, and renders a template."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.base import ConsoleRoute, Viewer, render
from api.console.format import BASE_PATH
from shared.domain.errors import BatchNotFound, InvalidInput, TransferNotFound
from shared.domain.money import parse_currency
from shared.domain.statements import Window, parse_moment
from shared.domain.transfers import TransferFilter, TransferKind, TransferState
from shared.services import console
from shared.services.api_keys import list_api_keys
from shared.services.batches import get_batch

router = APIRouter(prefix=BASE_PATH, route_class=ConsoleRoute)

MERCHANTS_PAGE = 50
STATEMENT_PAGE = 50
TRANSFERS_PAGE = 50
BATCHES_PAGE = 25
STATES = [state.value for state in TransferState]
KINDS = [kind.value for kind in TransferKind]


def new_form_key() -> str:
    """The Idempotency-Key a money form is rendered with: sending it twice makes one movement."""
    return f"console-{uuid.uuid4().hex}"


def parse_uuid(value: str, not_found: type[TransferNotFound] | type[BatchNotFound]) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found(value) from None


def _moment(value: str | None, what: str) -> datetime | None:
    """A time from a form: ISO 8601; without an offset (a `datetime-local` field) it is UTC."""
    if not value:
        return None
    try:
        naive = datetime.fromisoformat(value).tzinfo is None
    except ValueError:
        naive = False
    return parse_moment(f"{value}Z" if naive else value, what=what)


@router.get("")
async def overview(request: Request, operator: Viewer) -> Response:
    view = await console.overview(operator.db, operator.actor, operator.redis)
    return render(request, "overview.html", operator=operator, nav="overview", view=view)


@router.get("/merchants")
async def merchants(
    request: Request, operator: Viewer, q: str | None = None, cursor: str | None = None
) -> Response:
    fragment = (q or "").strip() or None
    page = await console.search_merchants(
        operator.db, operator.actor, fragment, cursor or None, MERCHANTS_PAGE
    )
    return render(
        request, "merchants.html", operator=operator, nav="merchants", q=fragment or "", page=page
    )


@router.get("/merchants/{name}")
async def merchant(
    request: Request,
    operator: Viewer,
    name: str,
    currency: str | None = None,
    start: str | None = None,
    end: str | None = None,
    cursor: str | None = None,
) -> Response:
    window = Window(_moment(start, "From"), _moment(end, "To"))
    view = await console.merchant_view(
        operator.db,
        operator.actor,
        name,
        parse_currency(currency) if currency else None,
        window,
        cursor or None,
        STATEMENT_PAGE,
    )
    return render(
        request,
        "merchant.html",
        operator=operator,
        nav="merchants",
        view=view,
        start=start or "",
        end=end or "",
        form_key=new_form_key(),
    )


def _transfer_filter(
    sender: str | None,
    receiver: str | None,
    currency: str | None,
    state: str | None,
    kind: str | None,
    batch_id: str | None,
) -> TransferFilter:
    if state and state not in STATES:
        raise InvalidInput(f"State must be one of {', '.join(STATES)}")
    if kind and kind not in KINDS:
        raise InvalidInput(f"Kind must be one of {', '.join(KINDS)}")
    try:
        batch = uuid.UUID(batch_id) if batch_id else None
    except ValueError:
        raise InvalidInput("Batch id must be a UUID") from None
    return TransferFilter(
        sender=sender or None,
        receiver=receiver or None,
        currency=parse_currency(currency) if currency else None,
        state=TransferState(state) if state else None,
        kind=TransferKind(kind) if kind else None,
        batch_id=batch,
    )


@router.get("/transfers")
async def transfers(request: Request, operator: Viewer, cursor: str | None = None) -> Response:
    # `from` is a Python keyword: the filters are read by their wire names.
    params = {name: (request.query_params.get(name) or "").strip() for name in _FILTERS}
    try:
        where = _transfer_filter(*(params[name] or None for name in _FILTERS))
    except InvalidInput as error:
        return render(
            request,
            "transfers.html",
            422,
            operator=operator,
            nav="transfers",
            filters=params,
            error=error.message,
            view=None,
            states=STATES,
            kinds=KINDS,
        )
    view = await console.transfer_list(
        operator.db, operator.actor, where, cursor or None, TRANSFERS_PAGE
    )
    return render(
        request,
        "transfers.html",
        operator=operator,
        nav="transfers",
        filters=params,
        error=None,
        view=view,
        states=STATES,
        kinds=KINDS,
    )


_FILTERS = ("from", "to", "currency", "state", "kind", "batch_id")


@router.get("/transfers/{transfer_id}")
async def transfer(request: Request, operator: Viewer, transfer_id: str) -> Response:
    view = await console.transfer_view(
        operator.db, operator.actor, parse_uuid(transfer_id, TransferNotFound)
    )
    return render(
        request,
        "transfer.html",
        operator=operator,
        nav="transfers",
        view=view,
        form_key=new_form_key(),
    )


@router.get("/batches")
async def batches(request: Request, operator: Viewer, cursor: str | None = None) -> Response:
    page = await console.list_batches(operator.db, operator.actor, cursor or None, BATCHES_PAGE)
    return render(request, "batches.html", operator=operator, nav="batches", page=page)


@router.get("/batches/{batch_id}")
async def batch(
    request: Request, operator: Viewer, batch_id: str, cursor: str | None = None
) -> Response:
    parsed = parse_uuid(batch_id, BatchNotFound)
    progress = await get_batch(operator.db, operator.actor, parsed)
    view = await console.transfer_list(
        operator.db, operator.actor, TransferFilter(batch_id=parsed), cursor or None, TRANSFERS_PAGE
    )
    return render(
        request, "batch.html", operator=operator, nav="batches", batch=progress, view=view
    )


@router.get("/keys")
async def keys(request: Request, operator: Viewer) -> Response:
    found = await list_api_keys(operator.db, operator.actor)
    return render(request, "keys.html", operator=operator, nav="keys", keys=found, created=None)
