"""A transfer whose applying raises never holds back another, and still reaches a final state.

Faults are injected into the planner (a bug the domain's checks catch) and into the plan itself
(a bug only the database's constraints catch); everything else is the real path on the real
database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shared.domain import posting as posting_rules
from shared.domain.posting import Plan, Posting
from shared.domain.transfers import Transfer
from shared.infra.database import SyncDatabase
from shared.services.posting import (
    APPLY_FAILED_REASON,
    MAX_APPLY_FAILURES,
    apply_group,
)
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    record_pending,
)

Planner = Callable[[Transfer, Callable[[posting_rules.AccountKey], Decimal]], Plan]


def _poison(monkeypatch: pytest.MonkeyPatch, poisoned: uuid.UUID, fault: Planner) -> None:
    """Plan `poisoned` with `fault`, every other transfer with the real rule."""
    real = posting_rules.plan_movement

    def planner(
        transfer: Transfer, balance_of: Any, original: Any = None, limits: Any = ()
    ) -> Plan:
        if transfer.id == poisoned:
            return fault(transfer, balance_of)
        return real(transfer, balance_of, original, limits)

    monkeypatch.setattr(posting_rules, "plan_movement", planner)


def _raises(transfer: Transfer, balance_of: Any) -> Plan:
    raise ZeroDivisionError("injected planning fault")


def _zero_posting(transfer: Transfer, balance_of: Any) -> Plan:
    """Sums to zero and overdraws nothing, so only the journal's CHECK (amount <> 0) refuses it."""
    sender = posting_rules.accounts_touched(transfer)[0]
    return Plan(transfer.id, (Posting(sender, Decimal(0)),), None, transfer.fee)


def _state(sync_db: SyncDatabase, transfer_id: uuid.UUID) -> Any:
    with sync_db.transaction() as connection:
        return connection.execute(
            text(
                "SELECT state, failure_reason, apply_failures, enqueued > clock_timestamp()"
                " AS backing_off, (SELECT count(*) FROM entries WHERE transfer_id = t.id)"
                " AS entries FROM transfers t WHERE id = :id"
            ),
            {"id": transfer_id},
        ).one()


async def _five_transfers(client: httpx.AsyncClient, app: FastAPI) -> tuple[list[Any], str, str]:
    sender = await funded_merchant(client, "100")
    receiver = await create_merchant(client)
    pending = await record_pending(
        app.state.database, [(sender["name"], receiver["name"], Decimal(10))] * 5
    )
    return pending, sender["name"], receiver["name"]


class TestPoisonTransfer:
    @pytest.mark.parametrize(
        "fault", [_raises, _zero_posting], ids=["planning raises", "the database refuses it"]
    )
    async def test_the_rest_of_the_group_settles(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        monkeypatch: pytest.MonkeyPatch,
        fault: Planner,
    ) -> None:
        pending, sender, receiver = await _five_transfers(client, app)
        poisoned = pending[2].id
        _poison(monkeypatch, poisoned, fault)
        result = apply_group(sync_db, [t.id for t in pending])
        assert sorted(result.completed) == sorted(t.id for t in pending if t.id != poisoned)
        assert result.faulted == [poisoned]
        state = _state(sync_db, poisoned)
        assert (state.state, state.apply_failures, state.backing_off) == ("pending", 1, True)
        assert await balance_of(client, sender) == 60
        assert await balance_of(client, receiver) == 40
        assert_ledger_consistent(sync_db)

    async def test_after_the_bound_it_fails_and_moves_nothing(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        pending, sender, _ = await _five_transfers(client, app)
        poisoned = pending[0].id
        _poison(monkeypatch, poisoned, _raises)
        for attempt in range(1, MAX_APPLY_FAILURES):
            apply_group(sync_db, [poisoned])
            assert _state(sync_db, poisoned).apply_failures == attempt
            assert _state(sync_db, poisoned).state == "pending"
        result = apply_group(sync_db, [poisoned])
        assert result.failed == [poisoned]
        state = _state(sync_db, poisoned)
        assert (state.state, state.failure_reason, state.entries) == (
            "failed",
            APPLY_FAILED_REASON,
            0,
        )
        assert await balance_of(client, sender) == 100
        # Final means final: the next attempt skips it.
        assert apply_group(sync_db, [poisoned]).skipped == 1
        assert_ledger_consistent(sync_db)

    async def test_a_transfer_backing_off_is_not_drained_early(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from shared.db.ledger import LedgerRepository

        pending, _, _ = await _five_transfers(client, app)
        poisoned = pending[0].id
        _poison(monkeypatch, poisoned, _raises)
        apply_group(sync_db, [poisoned])
        with sync_db.transaction() as connection:
            assert poisoned not in LedgerRepository(connection).oldest_pending(10_000)
        monkeypatch.undo()
        apply_group(sync_db, [t.id for t in pending])
        assert_ledger_consistent(sync_db)
