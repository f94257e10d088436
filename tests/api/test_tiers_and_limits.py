"""Volume fee tiers and daily/monthly limits through the API and the worker (SPEC Part 3), on
real PostgreSQL and Redis; a controllable clock crosses the UTC day and month boundaries."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from shared.infra import clock
from shared.infra.database import SyncDatabase
from shared.infra.queue import GROUP_SIZE
from shared.services.posting import apply_group, drain_pending
from tests.api.test_access import bearer, new_key
from tests.api.test_batches import item, post_batch
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    open_balance,
    record_pending,
    settle,
    submit,
)

DAILY, MONTHLY = "Daily limit exceeded", "Monthly limit exceeded"
TIERS = [
    {"from_volume": "0", "percent_fee": "2"},
    {"from_volume": "1000", "percent_fee": "1"},
    {"from_volume": "1500", "percent_fee": "0.5"},
]


async def patch(client: httpx.AsyncClient, name: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.patch(f"/v1/merchants/{name}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def fee_of(client: httpx.AsyncClient, sender: str, receiver: str, amount: str) -> str:
    """The fee percent a transfer submitted now snapshots."""
    response = await submit(client, sender, receiver, amount)
    assert response.status_code == 202, response.text
    percent: str = response.json()["result"]["percent_fee"]
    return percent


def at(moment: datetime) -> Any:
    return lambda: moment


class TestPatchRules:
    async def test_bad_tiers_and_limits_are_422_naming_the_field(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client)
        cases = [
            (
                {"fee_tiers": []},
                "body.fee_tiers",
                "Fee tiers must not be empty (null returns to the flat percent_fee)",
            ),
            (
                {"fee_tiers": [{"from_volume": "5", "percent_fee": "1"}]},
                "body.fee_tiers",
                "The first fee tier must start from volume 0",
            ),
            (
                {"fee_tiers": [TIERS[0], TIERS[2], TIERS[1]]},
                "body.fee_tiers",
                "Fee tiers must be in strictly ascending order of from_volume",
            ),
            (
                {"limits": [{"currency": "USD", "period": "year", "max_amount": "1"}]},
                "body.limits",
                "Limit period must be day or month",
            ),
            (
                {"limits": [{"currency": "USD", "period": "day", "max_amount": "1"}] * 2},
                "body.limits",
                "Only one limit per currency and period",
            ),
        ]
        for body, field, message in cases:
            response = await api_client.patch(f"/v1/merchants/{merchant['name']}", json=body)
            assert response.status_code == 422, body
            assert response.json()["details"] == [{"field": field, "message": message}], body
        unchanged = (await api_client.get(f"/v1/merchants/{merchant['name']}")).json()["result"]
        assert (unchanged["fee_tiers"], unchanged["limits"]) == (None, [])

    async def test_tiers_and_limits_are_shown_and_can_be_taken_back(
        self, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client, percent_fee="3")
        limits = [
            {"currency": "usd", "period": "day", "max_amount": "1000"},
            {"currency": "EUR", "period": "month", "max_amount": "0.5"},
        ]
        changed = await patch(api_client, merchant["name"], {"fee_tiers": TIERS, "limits": limits})
        assert changed["fee_tiers"] == [
            {"from_volume": "0.00000000", "percent_fee": "2.00"},
            {"from_volume": "1000.00000000", "percent_fee": "1.00"},
            {"from_volume": "1500.00000000", "percent_fee": "0.50"},
        ]
        assert changed["limits"] == [
            {
                "currency": "EUR",
                "period": "month",
                "max_amount": "0.50000000",
                "used": "0.00000000",
            },
            {
                "currency": "USD",
                "period": "day",
                "max_amount": "1000.00000000",
                "used": "0.00000000",
            },
        ]
        assert changed["updated"] > merchant["updated"]
        shown = (await api_client.get(f"/v1/merchants/{merchant['name']}")).json()["result"]
        assert (shown["fee_tiers"], shown["limits"]) == (changed["fee_tiers"], changed["limits"])
        same = await patch(api_client, merchant["name"], {"fee_tiers": TIERS})
        assert same["updated"] == changed["updated"]  # nothing changed
        back = await patch(api_client, merchant["name"], {"fee_tiers": None, "limits": []})
        assert (back["fee_tiers"], back["limits"], back["percent_fee"]) == (None, [], "3.00")

    async def test_a_merchant_key_cannot_set_them(self, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client)
        key = await new_key(api_client, merchant["name"])
        for body in ({"fee_tiers": TIERS}, {"limits": []}):
            response = await api_client.patch(
                f"/v1/merchants/{merchant['name']}", json=body, headers=bearer(key["secret"])
            )
            assert response.status_code == 403


class TestFeeTiers:
    async def test_the_tier_of_the_volume_recorded_before_each_transfer(
        self, api_client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(api_client, "10000", percent_fee="3")
        receiver = await create_merchant(api_client)
        await patch(api_client, sender["name"], {"fee_tiers": TIERS})
        names = (sender["name"], receiver["name"])
        ids = []
        for amount, expected in (("600", "2.00"), ("399.99999999", "2.00")):
            response = await submit(api_client, *names, amount)
            assert response.json()["result"]["percent_fee"] == expected
            ids.append(response.json()["result"]["id"])
        # 999.99999999 recorded (pending or completed: both count).
        assert await fee_of(api_client, *names, "0.00000001") == "2.00"
        # Volume exactly 1000: the tier that starts there.
        response = await submit(api_client, *names, "500")
        assert response.json()["result"]["percent_fee"] == "1.00"
        assert response.json()["result"]["fee"] == "5.00000000"
        # Volume 1500; this one fails for funds, and a failed transfer is no volume.
        failing = await submit(api_client, *names, "9999")
        assert failing.json()["result"]["percent_fee"] == "0.50"
        apply_group(sync_db, [uuid.UUID(failing.json()["result"]["id"])])
        (failed,) = await settle(api_client, [failing.json()["result"]["id"]])
        assert failed["failure_reason"] == "Insufficient funds"
        assert await fee_of(api_client, *names, "1") == "0.50"  # 1500 without the failed one
        assert_ledger_consistent(sync_db)

    async def test_a_failed_transfer_leaves_the_volume_below_a_boundary(
        self, api_client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(api_client, "1000", percent_fee="0")
        receiver = await create_merchant(api_client)
        await patch(api_client, sender["name"], {"fee_tiers": TIERS})
        names = (sender["name"], receiver["name"])
        failing = await submit(api_client, *names, "1000")  # 1000 + 2% fee > 1000
        apply_group(sync_db, [uuid.UUID(failing.json()["result"]["id"])])
        (failed,) = await settle(api_client, [failing.json()["result"]["id"]])
        assert failed["state"] == "failed"
        assert await fee_of(api_client, *names, "1") == "2.00"

    async def test_the_volume_starts_again_each_utc_month(
        self, api_client: httpx.AsyncClient, sync_db: SyncDatabase, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sender = await funded_merchant(api_client, "5000")
        receiver = await create_merchant(api_client)
        await patch(api_client, sender["name"], {"fee_tiers": TIERS})
        names = (sender["name"], receiver["name"])
        done = await submit(api_client, *names, "1200")
        apply_group(sync_db, [uuid.UUID(done.json()["result"]["id"])])
        assert await fee_of(api_client, *names, "1") == "1.00"
        now = datetime.now(UTC)
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        monkeypatch.setattr(clock, "utc_now", at(end - timedelta(microseconds=1)))
        assert await fee_of(api_client, *names, "1") == "1.00"  # the month's last instant
        monkeypatch.setattr(clock, "utc_now", at(end))
        assert await fee_of(api_client, *names, "1") == "2.00"  # a new month: volume 0
        # Read in UTC whatever the clock's zone: 01:00 at UTC+2 on the 1st is still last month.
        east = timezone(timedelta(hours=2))
        monkeypatch.setattr(clock, "utc_now", at(end.astimezone(east) - timedelta(hours=1)))
        assert await fee_of(api_client, *names, "1") == "1.00"

    async def test_a_batch_sees_the_volume_recorded_before_it(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "5000")
        receiver = await create_merchant(client)
        await patch(client, sender["name"], {"fee_tiers": TIERS})
        names = (sender["name"], receiver["name"])
        before = await submit(client, *names, "500")
        await settle(client, [before.json()["result"]["id"]])
        # 500 recorded before the batch; its items are recorded together, none before another:
        # one after another they would pay 2%, 1% (1100) and 0.5% (1700).
        batch = await post_batch(client, [item(*names, "600") for _ in range(3)])
        ids = [outcome["transfer"]["id"] for outcome in batch["items"]]
        settled = await settle(client, ids)
        assert [t["percent_fee"] for t in settled] == ["2.00", "2.00", "2.00"]
        assert await fee_of(client, *names, "1") == "0.50"  # 2300 now
        assert_ledger_consistent(sync_db)

    async def test_only_transfers_sent_in_the_currency_make_volume(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender = await funded_merchant(client, "5000")
        receiver = await funded_merchant(client, "5000")
        await open_balance(client, sender["id"], "EUR", "5000")
        await patch(client, sender["name"], {"fee_tiers": TIERS})
        names = (sender["name"], receiver["name"])
        moved = [
            await submit(client, *names, "900", currency="EUR"),  # another currency
            await submit(client, receiver["name"], sender["name"], "900"),  # received
            await client.post(
                "/v1/withdrawals",
                json={"merchant": sender["name"], "amount": "900", "currency": "USD"},
                headers={"Idempotency-Key": f"w-{sender['name']}"},
            ),
            await client.post(
                "/v1/deposits",
                json={"merchant": sender["name"], "amount": "900", "currency": "USD"},
                headers={"Idempotency-Key": f"d-{sender['name']}"},
            ),
        ]
        await settle(client, [response.json()["result"]["id"] for response in moved])
        assert await fee_of(client, *names, "1000") == "2.00"  # volume 0
        assert await fee_of(client, *names, "1") == "1.00"  # volume 1000
        assert_ledger_consistent(sync_db)


class TestLimits:
    async def limited_sender(
        self, client: httpx.AsyncClient, *limits: tuple[str, str], funds: str = "5000"
    ) -> tuple[str, str]:
        sender = await funded_merchant(client, funds)
        receiver = await create_merchant(client)
        await patch(
            client,
            sender["name"],
            {
                "limits": [
                    {"currency": "USD", "period": period, "max_amount": amount}
                    for period, amount in limits
                ]
            },
        )
        return sender["name"], receiver["name"]

    async def used(self, client: httpx.AsyncClient, name: str) -> dict[str, str]:
        merchant = (await client.get(f"/v1/merchants/{name}")).json()["result"]
        return {limit["period"]: limit["used"] for limit in merchant["limits"]}

    async def assert_six_of_ten(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase, sender: str, ids: list[str]
    ) -> None:
        settled = await settle(client, ids)
        outcomes = Counter(t["failure_reason"] for t in settled)
        assert outcomes == {None: 6, DAILY: 4}
        assert await balance_of(client, sender) == Decimal(5000 - 900)
        assert await self.used(client, sender) == {"day": "900.00000000"}
        assert_ledger_consistent(sync_db)

    async def test_ten_concurrent_transfers_of_150_under_1000_a_day(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender, receiver = await self.limited_sender(client, ("day", "1000"))
        responses = await asyncio.gather(
            *(submit(client, sender, receiver, "150") for _ in range(10))
        )
        assert {response.status_code for response in responses} == {202}
        ids = [response.json()["result"]["id"] for response in responses]
        await self.assert_six_of_ten(client, sync_db, sender, ids)

    async def test_ten_in_one_batch(self, client: httpx.AsyncClient, sync_db: SyncDatabase) -> None:
        sender, receiver = await self.limited_sender(client, ("day", "1000"))
        batch = await post_batch(client, [item(sender, receiver, "150") for _ in range(10)])
        ids = [outcome["transfer"]["id"] for outcome in batch["items"]]
        await self.assert_six_of_ten(client, sync_db, sender, ids)

    async def test_ten_drained_as_one_group(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        sender, receiver = await self.limited_sender(client, ("day", "1000"))
        pending = await record_pending(
            app.state.database, [(sender, receiver, Decimal(150)) for _ in range(10)]
        )
        drain_pending(sync_db, [pending[0].id], GROUP_SIZE)
        await self.assert_six_of_ten(client, sync_db, sender, [str(t.id) for t in pending])

    async def test_ten_in_groups_racing_on_five_threads(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        sender, receiver = await self.limited_sender(client, ("day", "1000"))
        pending = await record_pending(
            app.state.database, [(sender, receiver, Decimal(150)) for _ in range(10)]
        )
        groups = [[pending[i].id, pending[i + 5].id] for i in range(5)]
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda ids: apply_group(sync_db, ids), groups))
        await self.assert_six_of_ten(client, sync_db, sender, [str(t.id) for t in pending])

    async def test_a_limit_set_while_a_group_waits_for_the_balance_applies_to_it(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        sender, receiver = await self.limited_sender(client)
        pending = await record_pending(
            app.state.database, [(sender, receiver, Decimal(400)) for _ in range(3)]
        )
        # Its own connection: the worker's pool is the group's and the lock watcher's.
        holding = create_engine(sync_db.engine.url, poolclass=NullPool)
        with ThreadPoolExecutor(max_workers=1) as pool, holding.connect() as holder:
            with holder.begin():
                holder.execute(
                    text(
                        "SELECT 1 FROM accounts a JOIN merchants m ON m.id = a.merchant_id"
                        " WHERE m.name = :name FOR UPDATE OF a"
                    ),
                    {"name": sender},
                )
                applying = pool.submit(apply_group, sync_db, [t.id for t in pending])
                await self.wait_for_lock_waiter(sync_db)
                await patch(
                    client,
                    sender,
                    {"limits": [{"currency": "USD", "period": "day", "max_amount": "500"}]},
                )
            applying.result(timeout=30)
        holding.dispose()
        settled = await settle(client, [str(t.id) for t in pending])
        assert [t["failure_reason"] for t in settled] == [None, DAILY, DAILY]
        assert_ledger_consistent(sync_db)

    async def wait_for_lock_waiter(self, sync_db: SyncDatabase) -> None:
        for _ in range(200):
            with sync_db.engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND query LIKE '%FOR UPDATE OF a%'"
                        " AND query NOT LIKE '%JOIN merchants m%'"
                    )
                ).scalar_one()
            if waiting:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the group never waited for the balance")

    async def test_a_conversion_counts_amount_and_fee_in_the_senders_currency(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender, receiver = await self.limited_sender(client, ("day", "100"))
        await patch(client, sender, {"percent_fee": "2"})
        rate = await client.put("/v1/fx-rates/USD/EUR", json={"rate": "0.9"})
        assert rate.status_code == 200

        async def convert(amount: str) -> dict[str, Any]:
            response = await client.post(
                "/v1/transfers",
                json={
                    "from_merchant": sender,
                    "to_merchant": receiver,
                    "amount": amount,
                    "currency": "USD",
                    "to_currency": "EUR",
                },
                headers={"Idempotency-Key": f"fx-{amount}-{sender}", "Prefer": "wait=10"},
            )
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()["result"]
            return result

        assert (await convert("98"))["state"] == "completed"
        assert await self.used(client, sender) == {"day": "99.96000000"}
        assert (await convert("1"))["failure_reason"] == DAILY
        assert_ledger_consistent(sync_db)

    async def test_withdrawals_count_with_the_fee_and_the_month_caps_too(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        sender, receiver = await self.limited_sender(client, ("day", "10000"), ("month", "300"))
        await patch(client, sender, {"percent_fee": "2"})
        first = await submit(client, sender, receiver, "100")  # 102
        withdrawal = await client.post(
            "/v1/withdrawals",
            json={"merchant": sender, "amount": "198", "currency": "USD"},
            headers={"Idempotency-Key": f"w-{sender}"},
        )
        assert withdrawal.status_code == 202, withdrawal.text
        ids = [first.json()["result"]["id"], withdrawal.json()["result"]["id"]]
        await settle(client, ids)  # 300: exactly the limit
        over = await submit(client, sender, receiver, "0.01")
        (refused,) = await settle(client, [over.json()["result"]["id"]])
        assert (refused["state"], refused["failure_reason"]) == ("failed", MONTHLY)
        assert await self.used(client, sender) == {"day": "300.00000000", "month": "300.00000000"}
        assert_ledger_consistent(sync_db)

    async def test_the_day_and_the_month_roll_over_in_utc(
        self,
        api_client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        sender, receiver = await self.limited_sender(api_client, ("day", "1000"), ("month", "1500"))

        async def apply_at(moment: datetime, amount: str) -> str | None:
            (pending,) = await record_pending(
                app.state.database, [(sender, receiver, Decimal(amount))]
            )
            monkeypatch.setattr(clock, "utc_now", at(moment))
            apply_group(sync_db, [pending.id])
            monkeypatch.undo()
            (settled,) = await settle(api_client, [str(pending.id)])
            reason: str | None = settled["failure_reason"]
            return reason

        async def used_at(moment: datetime) -> dict[str, str]:
            monkeypatch.setattr(clock, "utc_now", at(moment))
            used = await self.used(api_client, sender)
            monkeypatch.undo()
            return used

        jan_30_last = datetime(2027, 1, 30, 23, 59, 59, 999999, UTC)
        jan_31 = datetime(2027, 1, 31, tzinfo=UTC)
        assert await apply_at(jan_30_last, "600") is None
        assert await apply_at(jan_31, "600") is None  # a new day: 600 of 1000; month 1200
        # 01:00 on February 1st at UTC+2 is still January 31st in UTC: day 1000 exactly, but
        # the month would reach 1600.
        east = timezone(timedelta(hours=2))
        assert await apply_at(datetime(2027, 2, 1, 1, tzinfo=east), "400") == MONTHLY
        assert await used_at(jan_31 + timedelta(hours=12)) == {
            "day": "600.00000000",
            "month": "1200.00000000",
        }
        feb_1 = datetime(2027, 2, 1, tzinfo=UTC)
        assert await apply_at(feb_1, "400") is None  # a new month
        assert await apply_at(feb_1, "600.00000001") == DAILY
        assert await used_at(feb_1) == {"day": "400.00000000", "month": "400.00000000"}
        assert await used_at(feb_1 + timedelta(days=1)) == {
            "day": "0.00000000",
            "month": "400.00000000",
        }
        assert_ledger_consistent(sync_db)
