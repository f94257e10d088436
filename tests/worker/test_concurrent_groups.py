"""Groups applied at the same time over the same accounts: each waits its turn, none loses one.

While a group waits for an account row another group holds, that group updates the row; when the
lock is granted, PostgreSQL re-checks the row against the locking query. A query that re-checked
through a join dropped the row, and every transfer touching it was set aside as a fault.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
from fastapi import FastAPI

from shared.infra.database import SyncDatabase
from shared.services.posting import apply_group
from tests.helpers import assert_ledger_consistent, balance_of, funded_merchant, record_pending

GROUPS = 6
TRANSFERS_PER_GROUP = 60


async def test_concurrent_groups_over_shared_accounts_fault_nothing(
    client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
) -> None:
    merchants = [await funded_merchant(client, "1000", percent_fee="1") for _ in range(4)]
    names = [merchant["name"] for merchant in merchants]
    groups = []
    for group in range(GROUPS):
        requests = [
            (names[(group + i) % 4], names[(group + i + 1) % 4], Decimal("1.5"))
            for i in range(TRANSFERS_PER_GROUP)
        ]
        groups.append([t.id for t in await record_pending(app.state.database, requests)])
    with ThreadPoolExecutor(max_workers=GROUPS) as pool:
        results = list(pool.map(lambda ids: apply_group(sync_db, ids), groups))
    assert [result.faulted for result in results] == [[]] * GROUPS
    assert sum(len(result.completed) for result in results) == GROUPS * TRANSFERS_PER_GROUP
    total = sum([await balance_of(client, name) or Decimal(0) for name in names], Decimal(0))
    fees = Decimal("0.015") * GROUPS * TRANSFERS_PER_GROUP  # 1% of 1.5, exact at 8 decimals
    assert total == 4 * Decimal(1000) - fees
    assert_ledger_consistent(sync_db)
