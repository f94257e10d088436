"""FX rates: an admin sets a pair's rate (1 BASE = rate QUOTE); any key lists them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from api.deps import DB, Caller
from api.errors import error_responses
from api.exact_json import ExactJSONRoute
from api.responses import envelope
from api.schemas import CurrencyIn, Envelope, FxRateRead, FxRateSet
from shared.services import fx_rates

router = APIRouter(prefix="/fx-rates", tags=["fx rates"], route_class=ExactJSONRoute)


@router.put(
    "/{base}/{quote}",
    response_model=Envelope[FxRateRead],
    responses=error_responses(403, 413, 422, 503),
    summary="Set the rate of a currency pair (admin): 1 BASE = rate QUOTE",
    description="Creates the pair or replaces its rate. Cross-currency transfers submitted "
    "after it use the new rate; each transfer keeps the rate it was submitted with. The "
    "inverse pair is a rate of its own (none is implied).",
)
async def put_rate(
    base: Annotated[CurrencyIn, Path(description="The currency converted from (any case).")],
    quote: Annotated[CurrencyIn, Path(description="The currency converted to (any case).")],
    body: FxRateSet,
    db: DB,
    actor: Caller,
) -> JSONResponse:
    rate = await fx_rates.put_rate(db, actor, base, quote, body.rate)
    return envelope(FxRateRead.model_validate(rate))


@router.get(
    "",
    response_model=Envelope[list[FxRateRead]],
    responses=error_responses(503),
    summary="Every currency pair's rate, by base then quote (any key)",
)
async def list_rates(db: DB, actor: Caller) -> JSONResponse:
    rates = await fx_rates.list_rates(db, actor)
    return envelope([FxRateRead.model_validate(rate) for rate in rates])
