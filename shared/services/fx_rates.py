"""FX rate use cases: an admin sets a pair's rate; any key reads them.

A rate applies to the cross-currency transfers submitted after it is set: each transfer keeps
the rate it was submitted with (`transfers.py`).
"""

from __future__ import annotations

from decimal import Decimal

from shared.db.fx_rates import FxRateRepository
from shared.domain.access import Actor
from shared.domain.fx import FxRate, check_pair
from shared.infra.database import Database


async def put_rate(db: Database, actor: Actor, base: str, quote: str, rate: Decimal) -> FxRate:
    """Set 1 `base` = `rate` `quote` (admin); the inverse pair is not touched."""
    actor.require_write()
    actor.require_admin()
    check_pair(base, quote)
    async with db.autocommit() as connection:
        return await FxRateRepository(connection).put(base, quote, rate)


async def list_rates(db: Database, actor: Actor) -> list[FxRate]:
    """Every pair's current rate, by base then quote (any key may read them)."""
    async with db.autocommit() as connection:
        return await FxRateRepository(connection).list()
