"""Merchants and their balances."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import DB, Caller
from api.errors import error_responses
from api.exact_json import ExactJSONRoute
from api.responses import envelope
from api.schemas import (
    BalanceCreate,
    BalanceRead,
    Envelope,
    MerchantCreate,
    MerchantRead,
    MerchantUpdate,
    MerchantWithBalancesRead,
    StatementEnvelope,
    StatementQuery,
    StatementRead,
)
from shared.services import merchants, statements

router = APIRouter(prefix="/merchants", tags=["merchants"], route_class=ExactJSONRoute)


@router.post(
    "",
    response_model=Envelope[MerchantRead],
    responses=error_responses(403, 409, 413, 422, 503),
    summary="Create a merchant (admin)",
)
async def create_merchant(body: MerchantCreate, db: DB, actor: Caller) -> JSONResponse:
    merchant = await merchants.create_merchant(db, actor, body.name, body.percent_fee)
    return envelope(MerchantRead.model_validate(merchant))


@router.patch(
    "/{merchant_name}",
    response_model=Envelope[MerchantWithBalancesRead],
    responses=error_responses(403, 404, 413, 422, 503),
    summary="Change a merchant's fee or fee tiers (for later transfers), its limits, or "
    "archive it (admin)",
)
async def update_merchant(
    merchant_name: str, body: MerchantUpdate, db: DB, actor: Caller
) -> JSONResponse:
    found = await merchants.update_merchant(db, actor, merchant_name, body.to_domain())
    return envelope(MerchantWithBalancesRead.of_merchant(found))


@router.post(
    "/balance",
    response_model=Envelope[BalanceRead],
    responses=error_responses(400, 403, 404, 409, 413, 422, 503),
    summary="Open a merchant's balance in a currency, depositing the initial amount (admin)",
)
async def open_balance(body: BalanceCreate, db: DB, actor: Caller) -> JSONResponse:
    balance = await merchants.open_balance(
        db, actor, body.merchant_id, body.currency, body.initial_amount
    )
    return envelope(BalanceRead.model_validate(balance))


@router.get(
    "/{merchant_name}",
    response_model=Envelope[MerchantWithBalancesRead],
    responses=error_responses(404, 503),
    summary="A merchant with its balances",
)
async def get_merchant(merchant_name: str, db: DB, actor: Caller) -> JSONResponse:
    found = await merchants.get_merchant(db, actor, merchant_name)
    return envelope(MerchantWithBalancesRead.of_merchant(found))


@router.get(
    "/{merchant_name}/balance",
    response_model=Envelope[list[BalanceRead]],
    responses=error_responses(404, 503),
    summary="A merchant's balances",
)
async def list_balances(merchant_name: str, db: DB, actor: Caller) -> JSONResponse:
    balances = await merchants.list_balances(db, actor, merchant_name)
    return envelope([BalanceRead.model_validate(balance) for balance in balances])


@router.get(
    "/{merchant_name}/statement",
    response_model=StatementEnvelope,
    responses=error_responses(404, 503),
    summary="A balance's journal over [from, to), oldest first, paginated",
)
async def get_statement(
    merchant_name: str, query: Annotated[StatementQuery, Query()], db: DB, actor: Caller
) -> JSONResponse:
    statement = await statements.get_statement(
        db, actor, merchant_name, query.currency, query.window(), query.cursor, query.limit
    )
    return envelope(StatementRead.of(statement), next_cursor=statement.next_cursor)
