"""Fuzzing: no request, valid or not, gets a 5xx, and every answer is SPEC's envelope.

Against a real `mini-ledger api` process (its protocol and limits included) with the session's
real workers: schemathesis drives every operation of the OpenAPI schema, and a hypothesis test
submits *valid* transfers between real funded merchants, with random amounts, keys, currencies
and `Prefer` values, so the paths past validation are fuzzed too.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from shared.domain.money import format_amount
from shared.infra.database import SyncDatabase
from tests.conftest import ADMIN_HEADERS, Processes
from tests.e2e.conftest import start_api
from tests.helpers import assert_ledger_consistent, unique

CURRENCIES = ["USD", "BTC"]
MERCHANTS = 4


@pytest.fixture(scope="module")
def fuzz_api(workers: Processes) -> Iterator[str]:
    processes = Processes()
    url = start_api(processes)
    yield url
    # The webhook endpoints the fuzzing created would be sent every later test's events.
    endpoints = httpx.get(f"{url}/v1/webhook-endpoints", headers=ADMIN_HEADERS, timeout=60)
    for endpoint in endpoints.json()["result"]:
        path = f"{url}/v1/webhook-endpoints/{endpoint['id']}"
        httpx.delete(path, headers=ADMIN_HEADERS, timeout=60)
    processes.stop_all()


def assert_envelope(response: Any, request: str) -> None:
    assert response.status_code < 500, f"{request} -> {response.status_code}: {response.text}"
    body = response.json()
    assert body["status"] == response.status_code, (request, body)
    assert ("result" in body) != ("error" in body), (request, body)
    if response.status_code == 422:
        assert isinstance(body["error"], list), (request, body)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_5xx(fuzz_api: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_api}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            assert_envelope(case.call(headers=ADMIN_HEADERS, timeout=60), case.as_curl_command())

        try:
            call()
        except Unsatisfiable:
            # An operation with nothing to make invalid (GET /health) has no negative cases.
            assert mode is GenerationMode.NEGATIVE


@pytest.fixture(scope="module")
def merchants(fuzz_api: str) -> list[str]:
    """Funded merchants with random fees, each holding both currencies."""
    names = [unique("fuzz") for _ in range(MERCHANTS)]
    with httpx.Client(base_url=fuzz_api, timeout=60, headers=ADMIN_HEADERS) as client:
        for index, name in enumerate(names):
            fee = ["0", "2", "0.5", "100"][index]
            merchant = client.post("/merchants", json={"name": name, "percent_fee": fee})
            for currency in CURRENCIES:
                balance = client.post(
                    "/merchants/balance",
                    json={
                        "merchant_id": merchant.json()["result"]["id"],
                        "currency": currency,
                        "initial_amount": "99999999999999999999.99999999",
                    },
                )
                assert balance.status_code == 200, balance.text
    return names


amounts = st.decimals(
    min_value=Decimal("0.00000001"),
    max_value=Decimal("99999999999999999999.99999999"),
    places=8,
    allow_nan=False,
    allow_infinity=False,
)
keys = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=255)
prefers = st.one_of(
    st.none(),
    st.sampled_from(["wait=0", "wait=1", "respond-async, wait=1", "wait=x", "wait=" + "0" * 5000]),
)


@given(
    data=st.data(),
    amount=amounts,
    as_string=st.booleans(),
    currency=st.sampled_from([*CURRENCIES, "usd", "btc", "EUR", "ZZZ999"]),
    key=st.one_of(keys, st.sampled_from(["fuzz-reused-1", "fuzz-reused-2"])),
    prefer=prefers,
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_valid_transfers_never_get_a_5xx(
    fuzz_api: str,
    merchants: list[str],
    data: st.DataObject,
    amount: Decimal,
    as_string: bool,
    currency: str,
    key: str,
    prefer: str | None,
) -> None:
    sender = data.draw(st.sampled_from(merchants))
    receiver = data.draw(st.sampled_from(merchants))
    # As a JSON string or a JSON number written digit for digit (no float ever involved).
    raw = f'"{amount:f}"' if as_string else f"{amount:f}"
    body = (
        f'{{"from_merchant": "{sender}", "to_merchant": "{receiver}", '
        f'"amount": {raw}, "currency": "{currency}"}}'
    )
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    if prefer is not None:
        headers["Prefer"] = prefer
    with httpx.Client(base_url=fuzz_api, timeout=60, headers=ADMIN_HEADERS) as client:
        response = client.post("/transfers", content=body, headers=headers)
    assert_envelope(response, f"POST /transfers {headers} {body}")
    if response.status_code in (200, 202) and response.headers.get("idempotent-replayed") is None:
        transfer = response.json()["result"]
        assert transfer["amount"] == format_amount(amount)
        assert transfer["currency"] == currency.upper()
    elif sender == receiver:
        assert response.status_code == 422
    else:
        # Refusals a valid request can meet: an unknown currency's balance, a reused key.
        assert response.status_code in (200, 202, 404, 422), response.text


def test_ledger_consistent_after_fuzzing(sync_db: SyncDatabase, merchants: list[str]) -> None:
    assert_ledger_consistent(sync_db)
