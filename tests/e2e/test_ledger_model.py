"""A model of the ledger against the real thing: Hypothesis drives random sequences of every kind
(deposits, withdrawals, transfers with fees, full and partial reversals) through the HTTP API of
a real API process and real workers, and after every step compares every balance, exactly, with
a model kept in integer minor units (which cannot round). The audit is clean at the end."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from shared.infra.database import SyncDatabase
from tests.conftest import ADMIN_HEADERS
from tests.helpers import assert_ledger_consistent, unique

pytestmark = pytest.mark.e2e

# Fees in hundredths of a percent: 0 %, 1.5 %, 2.5 %, 33.33 % (which rounds a lot).
PERCENT_FEES = (0, 150, 250, 3333)
# Minor units: often tiny (where fees and refunds round), else up to 50.00000000.
AMOUNTS = st.one_of(st.integers(1, 30), st.integers(1, 5 * 10**9))


FUNDING = 200 * 10**8


def as_amount(units: int) -> str:
    return f"{Decimal(units).scaleb(-8):f}"


def as_units(amount: str) -> int:
    whole, _, fraction = amount.partition(".")
    return int(whole) * 10**8 + int(fraction.ljust(8, "0"))


def fee_units(amount: int, percent_hundredths: int) -> int:
    """fee = amount * percent / 100, half-up to 8 decimals, in integers."""
    return (2 * amount * percent_hundredths + 10_000) // 20_000


def refund_units(original: ModelTransfer, amount: int) -> int:
    """SPEC's fee refund: proportional half-up, the completing reversal takes what is left."""
    left = original.fee - original.refunded
    if original.reversed + amount == original.amount:
        return left
    return min((2 * original.fee * amount + original.amount) // (2 * original.amount), left)


@dataclass
class ModelTransfer:
    id: str
    sender: int
    receiver: int
    amount: int
    fee: int
    reversed: int = 0
    refunded: int = 0


def ledger_machine(url: str, currency: str) -> type[RuleBasedStateMachine]:
    class LedgerModel(RuleBasedStateMachine):
        transfers = Bundle("transfers")

        def __init__(self) -> None:
            super().__init__()
            self.http = httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=60)
            self.names: list[str] = []
            self.balances: list[int] = []
            for percent in PERCENT_FEES:
                name = unique("model")
                percent_fee = f"{Decimal(percent).scaleb(-2):f}"
                response = self.http.post(
                    "/v1/merchants", json={"name": name, "percent_fee": percent_fee}
                )
                assert response.status_code == 200, response.text
                self.names.append(name)
                self.balances.append(0)
                # Most transfers then complete, so there is much to reverse.
                self.deposit(len(self.names) - 1, FUNDING)

        def teardown(self) -> None:
            self.http.close()

        def _submit(self, path: str, body: dict[str, Any]) -> httpx.Response:
            response = self.http.post(
                path, json=body, headers={"Idempotency-Key": unique("m"), "Prefer": "wait=30"}
            )
            assert response.status_code in (200, 400), response.text
            return response

        def _final(self, response: httpx.Response) -> dict[str, Any]:
            assert response.status_code == 200, response.text
            transfer: dict[str, Any] = response.json()["result"]
            assert transfer["state"] in ("completed", "failed"), transfer
            return transfer

        @rule(merchant=st.integers(0, len(PERCENT_FEES) - 1), amount=AMOUNTS)
        def deposit(self, merchant: int, amount: int) -> None:
            body = {"merchant": self.names[merchant], "amount": as_amount(amount)}
            transfer = self._final(self._submit("/v1/deposits", {**body, "currency": currency}))
            assert transfer["state"] == "completed"
            self.balances[merchant] += amount

        @rule(merchant=st.integers(0, len(PERCENT_FEES) - 1), amount=AMOUNTS)
        def withdraw(self, merchant: int, amount: int) -> None:
            if self.balances[merchant] == 0 and not self._has_balance(merchant):
                return  # 404: no balance in the currency yet (a rule of its own, tested elsewhere)
            body = {"merchant": self.names[merchant], "amount": as_amount(amount)}
            transfer = self._final(self._submit("/v1/withdrawals", {**body, "currency": currency}))
            covered = self.balances[merchant] >= amount
            assert transfer["state"] == ("completed" if covered else "failed"), transfer
            if covered:
                self.balances[merchant] -= amount

        @rule(
            target=transfers,
            sender=st.integers(0, len(PERCENT_FEES) - 1),
            offset=st.integers(1, len(PERCENT_FEES) - 1),
            amount=AMOUNTS,
        )
        def transfer(self, sender: int, offset: int, amount: int) -> ModelTransfer | None:
            receiver = (sender + offset) % len(PERCENT_FEES)
            if not self._has_balance(sender):
                return None
            response = self._submit(
                "/v1/transfers",
                {
                    "from_merchant": self.names[sender],
                    "to_merchant": self.names[receiver],
                    "amount": as_amount(amount),
                    "currency": currency,
                },
            )
            transfer = self._final(response)
            fee = fee_units(amount, PERCENT_FEES[sender])
            assert as_units(transfer["fee"]) == fee
            if self.balances[sender] < amount + fee:
                assert transfer["state"] == "failed"
                return None
            assert transfer["state"] == "completed"
            self.balances[sender] -= amount + fee
            self.balances[receiver] += amount
            return ModelTransfer(transfer["id"], sender, receiver, amount, fee)

        @rule(original=transfers, part=st.one_of(st.none(), st.integers(1, 10), AMOUNTS))
        def reverse(self, original: ModelTransfer | None, part: int | None) -> None:
            if original is None:
                return
            remainder = original.amount - original.reversed
            amount = remainder if part is None else part
            body = {} if part is None else {"amount": as_amount(part)}
            response = self._submit(f"/v1/transfers/{original.id}/reversals", body)
            if remainder == 0 or amount > remainder:
                assert response.status_code == 400
                assert response.json()["error"] == "Amount exceeds the reversible remainder"
                return
            reversal = self._final(response)
            refund = refund_units(original, amount)
            assert as_units(reversal["fee"]) == refund
            if self.balances[original.receiver] < amount:
                assert reversal["state"] == "failed"
                assert reversal["failure_reason"] == "Insufficient funds"
                return
            assert reversal["state"] == "completed", reversal
            self.balances[original.receiver] -= amount
            self.balances[original.sender] += amount + refund
            original.reversed += amount
            original.refunded += refund
            if original.reversed == original.amount:
                assert original.refunded == original.fee  # every unit of the fee came back

        def _has_balance(self, merchant: int) -> bool:
            response = self.http.get(f"/v1/merchants/{self.names[merchant]}/balance")
            return any(b["currency"] == currency for b in response.json()["result"])

        @invariant()
        def balances_match_the_model(self) -> None:
            for name, expected in zip(self.names, self.balances, strict=True):
                response = self.http.get(f"/v1/merchants/{name}/balance")
                actual = {b["currency"]: b["amount"] for b in response.json()["result"]}
                assert as_units(actual.get(currency, "0")) == expected, (name, actual)

    return LedgerModel


def test_random_sequences_of_every_kind_match_the_model(
    api_processes: list[str], sync_db: SyncDatabase
) -> None:
    currency = "M" + uuid.uuid4().hex[:7].upper()
    run_state_machine_as_test(
        ledger_machine(api_processes[0], currency),
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert_ledger_consistent(sync_db)
