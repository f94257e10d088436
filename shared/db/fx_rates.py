"""FX rates (async): set one pair's rate, list them all."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import fx_rates
from shared.domain.fx import FxRate


def _fx_rate(row: Any) -> FxRate:
    return FxRate(base=row.base, quote=row.quote, rate=row.rate, updated=row.updated)


class FxRateRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def put(self, base: str, quote: str, rate: Decimal) -> FxRate:
        """Set the rate of (base, quote), creating the pair or replacing its rate."""
        new = insert(fx_rates).values(base=base, quote=quote, rate=rate)
        statement = new.on_conflict_do_update(
            index_elements=[fx_rates.c.base, fx_rates.c.quote],
            set_={"rate": new.excluded.rate, "updated": func.now()},
        ).returning(*fx_rates.c)
        return _fx_rate((await self._connection.execute(statement)).one())

    async def list(self) -> list[FxRate]:
        statement = select(*fx_rates.c).order_by(fx_rates.c.base, fx_rates.c.quote)
        return [_fx_rate(row) for row in await self._connection.execute(statement)]
