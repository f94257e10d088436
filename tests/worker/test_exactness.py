"""Exact at any size, on every path: balances past 10^21 match integer arithmetic to the unit.

Amounts are modelled in integer minor units (1e-8), so the model itself cannot round.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from sqlalchemy import text

from shared.infra.config import load_settings
from shared.infra.database import SyncDatabase
from shared.infra.locks import Locker
from shared.infra.queue import GROUP_SIZE
from shared.services.posting import apply_group, apply_transfers, drain_pending
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    open_balance,
    record_pending,
    settle,
    submit,
    unique,
)

MAX_INITIAL = "99999999999999999999.99999999"  # the largest single amount
HUB_FEEDERS = 12  # x 10^20 each: the hub's balance starts past 10^21


def minor(units: int) -> str:
    """An amount from integer minor units, as the API takes it, built without arithmetic."""
    return f"{Decimal(f'{units}E-8'):f}"


def units(amount: Decimal | str | int) -> int:
    """Integer minor units of an amount, from its digits (Decimal arithmetic would round)."""
    sign, digits, exponent = Decimal(amount).as_tuple()
    assert isinstance(exponent, int)
    number = int("".join(map(str, digits)))
    shift = exponent + 8
    if shift >= 0:
        number *= 10**shift
    else:
        number, rest = divmod(number, 10**-shift)
        assert rest == 0, amount
    return -number if sign else number


def fee_units(amount: int, percent_fee_hundredths: int) -> int:
    """fee = amount * percent / 100, half-up to 8 decimals, in integers."""
    return (amount * percent_fee_hundredths * 2 + 10_000) // 20_000


@pytest.fixture(scope="module")
async def hub(client: httpx.AsyncClient) -> dict[str, Any]:
    """A merchant (fee 2.50%) holding more than 10^21, fed by maximal transfers in one batch."""
    hub = await funded_merchant(client, "1", percent_fee="2.50")
    feeders = [await funded_merchant(client, MAX_INITIAL) for _ in range(HUB_FEEDERS)]
    items = [
        {
            "idempotency_key": unique("feed"),
            "from_merchant": feeder["name"],
            "to_merchant": hub["name"],
            "amount": MAX_INITIAL,
            "currency": "USD",
        }
        for feeder in feeders
    ]
    response = await client.post("/batches", json={"transfers": items})
    ids = [item["transfer"]["id"] for item in response.json()["result"]["items"]]
    assert {t["state"] for t in await settle(client, ids)} == {"completed"}
    assert units(await balance_of(client, hub["name"]) or 0) == units(1) + HUB_FEEDERS * units(
        MAX_INITIAL
    )
    return hub


PATHS = ["single", "drain", "group", "bulk"]
MOVES = (
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 10**28 - 1)),
        min_size=1,
        max_size=10,
    )
    .map(lambda moves: [move for move in moves if move[0] != move[1]])
    .filter(bool)
)


@pytest.mark.parametrize("path", PATHS)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    moves=MOVES,
    fees=st.lists(st.integers(0, 10_000), min_size=4, max_size=4),
    openings=st.lists(st.integers(0, 10**28 - 1), min_size=4, max_size=4),
)
async def test_every_path_matches_integer_arithmetic(
    path: str,
    moves: list[tuple[int, int, int]],
    fees: list[int],
    openings: list[int],
    hub: dict[str, Any],
    client: httpx.AsyncClient,
    app: FastAPI,
    sync_db: SyncDatabase,
) -> None:
    merchants = [hub]
    for fee, opening in zip(fees, openings, strict=True):
        merchant = await create_merchant(client, percent_fee=minor(fee * 10**6))
        await open_balance(client, merchant["id"], "USD", minor(opening))
        merchants.append(merchant)
    percent = [250, *fees]
    model = [units(await balance_of(client, m["name"]) or 0) for m in merchants]
    opening = list(model)
    requests = [
        (merchants[a]["name"], merchants[b]["name"], Decimal(minor(amount)))
        for a, b, amount in moves
    ]

    ids = await _apply_by(path, requests, client, app, sync_db)
    final = {t["id"]: t for t in await settle(client, ids)}

    effect = list(opening)
    for transfer_id, (a, b, amount) in zip(ids, moves, strict=True):
        fee = fee_units(amount, percent[a])
        transfer = final[transfer_id]
        assert units(transfer["fee"]) == fee
        if path in ("single", "group"):  # applied in exactly this order: the model decides
            affordable = model[a] >= amount + fee
            assert transfer["state"] == ("completed" if affordable else "failed")
            if affordable:
                model[a] -= amount + fee
                model[b] += amount
        if transfer["state"] == "completed":
            effect[a] -= amount + fee
            effect[b] += amount
            assert _entry_units(sync_db, transfer_id) == sorted(
                x for x in (-(amount + fee), amount, fee) if x
            )
    for merchant, expected in zip(merchants, effect, strict=True):
        assert units(await balance_of(client, merchant["name"]) or 0) == expected
    assert_ledger_consistent(sync_db)


async def _apply_by(
    path: str,
    requests: list[tuple[str, str, Decimal]],
    client: httpx.AsyncClient,
    app: FastAPI,
    sync_db: SyncDatabase,
) -> list[str]:
    """Apply the transfers through one path; their ids, in request order."""
    if path == "bulk":
        items = [
            {
                "idempotency_key": unique("bulk"),
                "from_merchant": sender,
                "to_merchant": receiver,
                "amount": str(amount),
                "currency": "USD",
            }
            for sender, receiver, amount in requests
        ]
        response = await client.post("/batches", json={"transfers": items})
        assert response.status_code == 202, response.text
        return [item["transfer"]["id"] for item in response.json()["result"]["items"]]
    pending = [t.id for t in await record_pending(app.state.database, requests)]
    if path == "single":
        redis = Redis.from_url(load_settings().redis_url)
        for transfer_id in pending:
            locker = Locker(redis)
            apply_transfers(sync_db, locker, [transfer_id], None, lock_ttl_s=10, lock_wait_s=5)
        redis.close()
    elif path == "group":
        apply_group(sync_db, pending)
    else:
        drain_pending(sync_db, [pending[0]], GROUP_SIZE)
    return [str(transfer_id) for transfer_id in pending]


def _entry_units(sync_db: SyncDatabase, transfer_id: str) -> list[int]:
    with sync_db.transaction() as connection:
        amounts = connection.execute(
            text("SELECT amount FROM entries WHERE transfer_id = :id"), {"id": transfer_id}
        ).scalars()
        return sorted(units(amount) for amount in amounts)


class TestIssueSevenCases:
    """The three cases the issue reproduced with plain HTTP."""

    async def test_a_batch_moving_a_maximal_balance_is_exact(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, MAX_INITIAL)
        receiver = await funded_merchant(client, MAX_INITIAL)
        item = {
            "idempotency_key": unique("all"),
            "from_merchant": sender["name"],
            "to_merchant": receiver["name"],
            "amount": MAX_INITIAL,
            "currency": "USD",
        }
        response = await client.post("/batches", json={"transfers": [item]})
        await settle(client, [response.json()["result"]["items"][0]["transfer"]["id"]])
        assert await balance_of(client, receiver["name"]) == Decimal(
            "199999999999999999999.99999998"
        )
        assert await balance_of(client, sender["name"]) == 0
        assert_ledger_consistent(sync_db)

    async def test_a_drained_backlog_into_a_balance_past_10_to_the_20_loses_nothing(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "1000")
        receiver = await funded_merchant(client, MAX_INITIAL)
        feeder = await funded_merchant(client, MAX_INITIAL)
        (feed,) = await record_pending(
            app.state.database, [(feeder["name"], receiver["name"], Decimal(MAX_INITIAL))]
        )
        small = await record_pending(
            app.state.database, [(sender["name"], receiver["name"], Decimal("1.00000001"))] * 80
        )
        drain_pending(sync_db, [feed.id], GROUP_SIZE)
        for transfer in small:  # anything the drain left to another group
            apply_group(sync_db, [transfer.id])
        expected = 2 * units(MAX_INITIAL) + 80 * units("1.00000001")
        assert units(await balance_of(client, receiver["name"]) or 0) == expected
        assert await balance_of(client, sender["name"]) == Decimal("919.99999920")
        assert_ledger_consistent(sync_db)

    async def test_an_exact_cover_past_10_to_the_20_completes(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, MAX_INITIAL, percent_fee="2")
        feeder = await funded_merchant(client, "2000000000000000000")
        top_up = await submit(client, feeder["name"], sender["name"], "2000000000000000000")
        await settle(client, [top_up.json()["result"]["id"]])
        receiver = await create_merchant(client)
        response = await submit(client, sender["name"], receiver["name"], MAX_INITIAL)
        (final,) = await settle(client, [response.json()["result"]["id"]])
        assert final["state"] == "completed", final
        assert final["fee"] == "2000000000000000000.00000000"
        assert await balance_of(client, sender["name"]) == 0
        assert_ledger_consistent(sync_db)
