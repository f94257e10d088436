"""Conversions through the workers match integer arithmetic: random rates and amounts, each
receiver credited exactly floor(amount × rate, 8) in its currency, every currency conserved
through the FX accounts, the audit clean.

Amounts are modelled in integer minor units (1e-8) and rates in units of 1e-12, so the model
itself cannot round.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from shared.infra.database import SyncDatabase
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    open_balance,
    settle,
    unique,
)
from tests.worker.test_exactness import fee_units, minor, units

pytestmark = pytest.mark.integration

AMOUNT_LIMIT = 10**28  # a single amount (and a converted one) is below 10^20
RATE_LIMIT = 10**27  # rates are below 10^15, in units of 1e-12
# Rates across the whole range: tiny ones (conversions to zero), everyday ones, huge ones
# (conversions past 10^20).
RATES = st.one_of(
    st.integers(1, 10**6), st.integers(10**11, 10**13), st.integers(1, RATE_LIMIT - 1)
)
AMOUNTS = st.one_of(st.integers(1, 10**10), st.integers(1, AMOUNT_LIMIT - 1))


def rate_text(rate: int) -> str:
    return f"{rate // 10**12}.{rate % 10**12:012d}"


def fresh_currency() -> str:
    return "H" + uuid.uuid4().hex[:9].upper()


def account_totals(db: SyncDatabase, currencies: list[str]) -> dict[tuple[str, str], int]:
    with db.transaction() as connection:
        rows = connection.execute(
            text(
                "SELECT kind, currency, sum(amount) AS total FROM accounts"
                " WHERE currency = ANY(:c) GROUP BY kind, currency"
            ),
            {"c": currencies},
        ).all()
    return {(row.kind, row.currency): units(row.total) for row in rows}


def entry_units(db: SyncDatabase, transfer_id: str) -> list[tuple[str, str, int]]:
    with db.transaction() as connection:
        rows = connection.execute(
            text(
                "SELECT a.kind, a.currency, e.amount FROM entries e"
                " JOIN accounts a ON a.id = e.account_id WHERE e.transfer_id = :id"
            ),
            {"id": transfer_id},
        ).all()
    return sorted((row.kind, row.currency, units(row.amount)) for row in rows)


@pytest.mark.parametrize("path", ["bulk", "single"])
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rates=st.lists(RATES, min_size=2, max_size=2),
    moves=st.lists(st.tuples(AMOUNTS, st.integers(0, 2)), min_size=1, max_size=8),
    fee=st.integers(0, 10_000),
    opening=st.integers(0, AMOUNT_LIMIT - 1),
)
async def test_conversions_match_integer_arithmetic(
    path: str,
    rates: list[int],
    moves: list[tuple[int, int]],
    fee: int,
    opening: int,
    client: httpx.AsyncClient,
    sync_db: SyncDatabase,
) -> None:
    source = fresh_currency()
    targets = [fresh_currency(), fresh_currency()]
    sender = await create_merchant(client, percent_fee=minor(fee * 10**6))
    await open_balance(client, sender["id"], source, minor(opening))
    receiver = await create_merchant(client)
    for target, rate in zip(targets, rates, strict=True):
        response = await client.put(
            f"/v1/fx-rates/{source}/{target}", json={"rate": rate_text(rate)}
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"]["rate"] == rate_text(rate)

    # target 0 or 1: converted at its rate; 2: the same currency (an ordinary transfer).
    requests = []
    for amount, target in moves:
        body: dict[str, Any] = {
            "from_merchant": sender["name"],
            "to_merchant": receiver["name"],
            "amount": minor(amount),
            "currency": source,
        }
        if target < 2:
            body["to_currency"] = targets[target]
        requests.append(body)
    answers = await _submit(path, requests, client)

    accepted: list[tuple[str, int, int, int | None]] = []  # id, amount, target, converted
    for (amount, target), (status, answer) in zip(moves, answers, strict=True):
        converted = None if target == 2 else amount * rates[target] // 10**12
        if converted == 0:
            assert (status, answer) == (422, ["Converted amount is zero"])
        elif converted is not None and converted >= AMOUNT_LIMIT:
            assert (status, answer) == (
                422,
                ["Converted amount must be less than 100000000000000000000"],
            )
        else:
            assert status == 202, answer
            assert answer["fee"] == minor(fee_units(amount, fee))
            if converted is None:
                assert (answer["to_currency"], answer["converted_amount"]) == (None, None)
            else:
                assert answer["to_currency"] == targets[target]
                assert answer["fx_rate"] == rate_text(rates[target])
                assert answer["converted_amount"] == minor(converted)
            accepted.append((answer["id"], amount, target, converted))

    final = {t["id"]: t for t in await settle(client, [a[0] for a in accepted])}
    sent = 0
    fees = 0
    converted_from = 0  # what the source currency's FX account takes
    received = {source: 0, targets[0]: 0, targets[1]: 0}
    for transfer_id, amount, target, converted in accepted:
        if final[transfer_id]["state"] != "completed":
            assert final[transfer_id]["failure_reason"] == "Insufficient funds"
            assert entry_units(sync_db, transfer_id) == []
            continue
        charge = fee_units(amount, fee)
        sent += amount + charge
        fees += charge
        currency = source if converted is None else targets[target]
        received[currency] += amount if converted is None else converted
        legs = [("merchant", source, -(amount + charge)), ("fee", source, charge)]
        if converted is None:
            legs.append(("merchant", source, amount))
        else:
            converted_from += amount
            legs += [
                ("fx", source, amount),
                ("fx", currency, -converted),
                ("merchant", currency, converted),
            ]
        assert entry_units(sync_db, transfer_id) == sorted(leg for leg in legs if leg[2])

    assert units(await balance_of(client, sender["name"], source) or 0) == opening - sent
    for currency in targets:
        assert (
            units(await balance_of(client, receiver["name"], currency) or 0) == (received[currency])
        )
    assert units(await balance_of(client, receiver["name"], source) or 0) == received[source]
    totals = account_totals(sync_db, [source, *targets])
    assert totals.get(("fx", source), 0) == converted_from
    for currency in targets:
        assert totals.get(("fx", currency), 0) == -received[currency]
    assert totals.get(("fee", source), 0) == fees
    # Conservation: per currency, merchants + fees + FX = brought in (minus issuance).
    for currency in (source, *targets):
        assert sum(v for (_, c), v in totals.items() if c == currency) == 0
    assert_ledger_consistent(sync_db)


async def _submit(
    path: str, requests: list[dict[str, Any]], client: httpx.AsyncClient
) -> list[tuple[int, Any]]:
    """(status, transfer or error messages) per request, in order."""
    if path == "bulk":
        items = [{"idempotency_key": unique("hfx"), **body} for body in requests]
        response = await client.post("/v1/batches", json={"transfers": items})
        assert response.status_code == 202, response.text
        answers = []
        for item in response.json()["result"]["items"]:
            if "transfer" in item and item["transfer"] is not None:
                answers.append((202, item["transfer"]))
            else:
                answers.append((item["error"]["status"], item["error"]["message"]))
        return answers
    answers = []
    for body in requests:
        response = await client.post(
            "/v1/transfers", json=body, headers={"Idempotency-Key": unique("hfx")}
        )
        payload = response.json()
        answers.append(
            (response.status_code, payload["result"] if "result" in payload else payload["error"])
        )
    return answers
