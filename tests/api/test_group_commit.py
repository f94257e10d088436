"""Group commit (`shared/services/recording.py`): the submissions one API process accepts while
it records others are recorded by one statement and handed to the workers as one message.

Through the API (the in-process app, real PostgreSQL, Redis and worker processes): concurrent
requests share one event loop, so a burst sent with `asyncio.gather` is recorded in groups, and
`mini_ledger_submissions_per_commit` shows it (its sum counts submissions, its count commits).
Each submission must still get its own answer: its transfer, its replay, or its own refusal.

On `PendingRecorder` itself (a fresh one, so the group forms deterministically: the first
`record()` starts the runner, and the others of the same `gather` queue before it runs): one
key several times in one statement, a group the database refuses, and a waiter whose client
went away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from shared.db.transfers import TransferRepository
from shared.domain.access import OPERATOR
from shared.domain.errors import IdempotencyKeyReused
from shared.domain.transfers import NewTransfer, Transfer, TransferRequest, TransferState
from shared.infra.database import Database, SyncDatabase
from shared.services import transfers
from shared.services.recording import PendingRecorder
from tests.helpers import (
    archive,
    assert_ledger_consistent,
    balance_of,
    count,
    create_merchant,
    funded_merchant,
    settle,
    submit,
    unique,
)

pytestmark = pytest.mark.integration

COMMITS = "mini_ledger_submissions_per_commit"
# A guard against a hang (a waiter never answered), not a timing assertion.
ANSWER_GUARD_S = 60
KEY_REUSED = "Idempotency-Key {} was already used for a different request"


@pytest.fixture
async def keyless(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """What Prometheus is: a client with no API key."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        yield http


async def commits(keyless: httpx.AsyncClient) -> tuple[float, float]:
    """(commits, submissions) this process has recorded: the histogram's count and sum."""
    response = await keyless.get("/metrics")
    assert response.status_code == 200, response.text
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name in (f"{COMMITS}_count", f"{COMMITS}_sum")
    }
    return samples[f"{COMMITS}_count"], samples[f"{COMMITS}_sum"]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def merchant_key(client: httpx.AsyncClient, merchant: str) -> str:
    response = await client.post(
        "/v1/api-keys", json={"name": unique("k"), "merchant": merchant, "scope": "write"}
    )
    assert response.status_code == 200, response.text
    secret: str = response.json()["result"]["secret"]
    return secret


async def move(
    client: httpx.AsyncClient, kind: str, merchant: str, amount: str, key: str
) -> httpx.Response:
    return await client.post(
        f"/v1/{kind}",
        json={"merchant": merchant, "amount": amount, "currency": "USD"},
        headers={"Idempotency-Key": key},
    )


def money(amount: Decimal | str) -> str:
    """How the API writes an amount."""
    return f"{Decimal(amount):.8f}"


def keys_recorded(db: SyncDatabase, keys: list[str]) -> int:
    return count(db, "SELECT count(*) FROM transfers WHERE idempotency_key = ANY(:keys)", keys=keys)


def ids_recorded(db: SyncDatabase, ids: list[uuid.UUID]) -> int:
    return count(db, "SELECT count(*) FROM transfers WHERE id = ANY(:ids)", ids=ids)


def new_transfers(
    requests: list[tuple[dict[str, Any], dict[str, Any], Decimal]],
) -> list[NewTransfer]:
    """Pending transfers as the API plans them (platform scope) between merchants without a
    fee, not recorded yet."""
    return [
        NewTransfer(
            id=uuid.uuid4(),
            idempotency_scope=None,
            idempotency_key=unique("grouped"),
            request_fingerprint=TransferRequest(
                sender["name"], receiver["name"], amount, "USD"
            ).fingerprint(),
            sender_id=uuid.UUID(sender["id"]),
            receiver_id=uuid.UUID(receiver["id"]),
            amount=amount,
            fee=Decimal(0),
            percent_fee=Decimal(0),
            currency="USD",
            request_id=None,
        )
        for sender, receiver, amount in requests
    ]


def fresh_recorder(app: FastAPI, sizes: list[int]) -> PendingRecorder:
    """A recorder of the app's database but of its own, so only the test's `record()` calls
    form its groups; `sizes` is told each group's size, as the API's metric is."""
    return PendingRecorder(app.state.database, app.state.publisher, on_group=sizes.append)


async def funded_pairs(
    client: httpx.AsyncClient, n: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`n` senders holding 100 USD each, and one receiver holding nothing."""
    senders = list(await asyncio.gather(*(funded_merchant(client, "100") for _ in range(n))))
    return senders, await create_merchant(client)


class TestBurstThroughTheApi:
    async def test_sixty_concurrent_submissions_are_grouped_and_each_answered_its_own(
        self, client: httpx.AsyncClient, keyless: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        n = 60
        senders = list(
            await asyncio.gather(
                *(funded_merchant(client, "100", percent_fee="1") for _ in range(n))
            )
        )
        receiver = await create_merchant(client)
        amounts = [Decimal(i + 1) + Decimal("0.25") for i in range(n)]  # all different
        keys = [unique("burst") for _ in range(n)]

        commits_before, submissions_before = await commits(keyless)
        responses = await asyncio.gather(
            *(
                submit(client, sender["name"], receiver["name"], str(amount), key=key)
                for sender, amount, key in zip(senders, amounts, keys, strict=True)
            )
        )
        commits_after, submissions_after = await commits(keyless)

        for response, sender, amount, key in zip(responses, senders, amounts, keys, strict=True):
            assert response.status_code == 202, response.text
            assert "idempotent-replayed" not in response.headers
            transfer = response.json()["result"]
            # Answers are matched back by id: each names its own request, never a neighbour's.
            assert transfer["idempotency_key"] == key
            assert transfer["amount"] == money(amount)
            assert transfer["fee"] == money(amount / 100)
            assert transfer["from_merchant_id"] == sender["id"]
            assert transfer["to_merchant_id"] == receiver["id"]
            assert transfer["state"] == "pending"
            assert response.headers["location"] == f"/transfers/{transfer['id']}"
        ids = [response.json()["result"]["id"] for response in responses]
        assert len(set(ids)) == n

        # Every submission was recorded by some commit, and fewer commits than submissions
        # carried them: at least one statement recorded several.
        assert submissions_after - submissions_before == n
        assert 1 <= commits_after - commits_before < n

        final = await settle(client, ids)
        assert [transfer["state"] for transfer in final] == ["completed"] * n
        for sender, amount in zip(senders, amounts, strict=True):
            assert await balance_of(client, sender["name"]) == Decimal(100) - amount - amount / 100
        assert await balance_of(client, receiver["name"]) == sum(amounts)
        assert keys_recorded(sync_db, keys) == n
        assert_ledger_consistent(sync_db)

    async def test_one_key_twenty_times_in_one_burst_makes_one_transfer(
        self, client: httpx.AsyncClient, keyless: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        n = 20
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        key = unique("same")
        commits_before, submissions_before = await commits(keyless)
        responses = await asyncio.gather(
            *(submit(client, sender["name"], receiver["name"], "7", key=key) for _ in range(n))
        )
        commits_after, submissions_after = await commits(keyless)

        assert {response.status_code for response in responses} <= {200, 202}
        ids = {response.json()["result"]["id"] for response in responses}
        assert len(ids) == 1
        assert {response.json()["result"]["amount"] for response in responses} == {money("7")}
        replayed = [response.headers.get("idempotent-replayed") for response in responses]
        assert replayed.count(None) == 1
        assert replayed.count("true") == n - 1
        # Every one reached the recorder, and some commit carried several of them: duplicates
        # of one key in one statement, left to ON CONFLICT.
        assert submissions_after - submissions_before == n
        assert commits_after - commits_before < n

        (final,) = await settle(client, list(ids))
        assert final["state"] == "completed"
        assert (
            count(sync_db, "SELECT count(*) FROM transfers WHERE idempotency_key = :k", k=key) == 1
        )
        assert await balance_of(client, sender["name"]) == Decimal(93)
        assert await balance_of(client, receiver["name"]) == Decimal(7)
        assert_ledger_consistent(sync_db)

    async def test_one_key_with_different_bodies_in_one_burst_one_wins_the_rest_are_422(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        n = 10
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        key = unique("reused")
        amounts = [str(i + 1) for i in range(n)]
        responses = await asyncio.gather(
            *(
                submit(client, sender["name"], receiver["name"], amount, key=key)
                for amount in amounts
            )
        )

        accepted = [
            (amount, r)
            for amount, r in zip(amounts, responses, strict=True)
            if r.status_code == 202
        ]
        assert len(accepted) == 1, [r.status_code for r in responses]
        (amount, winner), message = accepted[0], KEY_REUSED.format(key)
        assert "idempotent-replayed" not in winner.headers
        assert winner.json()["result"]["amount"] == money(amount)
        for response in responses:
            if response is not winner:
                assert response.status_code == 422
                assert response.json() == {
                    "status": 422,
                    "error": [message],
                    "details": [{"field": "header.Idempotency-Key", "message": message}],
                }
        with sync_db.transaction() as connection:
            stored = connection.execute(
                text("SELECT id, amount FROM transfers WHERE idempotency_key = :k"), {"k": key}
            ).all()
        assert [(str(row.id), Decimal(row.amount)) for row in stored] == [
            (winner.json()["result"]["id"], Decimal(amount))
        ]
        (final,) = await settle(client, [winner.json()["result"]["id"]])
        assert final["state"] == "completed"
        assert await balance_of(client, sender["name"]) == Decimal(100) - Decimal(amount)
        assert_ledger_consistent(sync_db)

    async def test_one_key_in_different_scopes_in_one_burst_each_gets_its_own_transfer(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        """The admin key's (the platform's) scope and four merchants' scopes, one key: five
        transfers. A second submission in the same scope replays that scope's transfer."""
        platform_payer, *merchants = await asyncio.gather(
            *(funded_merchant(client, "100") for _ in range(5))
        )
        receiver = await create_merchant(client)
        secrets = [await merchant_key(client, merchant["name"]) for merchant in merchants]
        key = unique("shared")

        def from_merchant(i: int) -> Any:
            return submit(
                client,
                merchants[i]["name"],
                receiver["name"],
                str(i + 2),
                key=key,
                headers=bearer(secrets[i]),
            )

        responses = await asyncio.gather(
            submit(client, platform_payer["name"], receiver["name"], "1", key=key),
            *(from_merchant(i) for i in range(len(merchants))),
            # The same request again in two of the scopes.
            submit(client, platform_payer["name"], receiver["name"], "1", key=key),
            from_merchant(0),
        )
        originals, replays = responses[:5], responses[5:]
        payers = [platform_payer, *merchants]
        for i, (response, payer) in enumerate(zip(originals, payers, strict=True)):
            # A scope sent twice may have answered with its replay, final by then (200).
            assert response.status_code in ((200, 202) if i < 2 else (202,)), response.text
            transfer = response.json()["result"]
            assert transfer["from_merchant_id"] == payer["id"]
            assert transfer["amount"] == money(str(i + 1))
            assert transfer["idempotency_key"] == key
        # Within a scope the key names one transfer: whichever of the two won, both name it.
        for replay, original in zip(replays, (originals[0], originals[1]), strict=True):
            assert replay.status_code in (200, 202)
            assert replay.json()["result"]["id"] == original.json()["result"]["id"]
            flags = {
                replay.headers.get("idempotent-replayed"),
                original.headers.get("idempotent-replayed"),
            }
            assert flags == {None, "true"}
        ids = [response.json()["result"]["id"] for response in originals]
        assert len(set(ids)) == len(originals)

        with sync_db.transaction() as connection:
            scopes = connection.execute(
                text("SELECT idempotency_scope FROM transfers WHERE idempotency_key = :k"),
                {"k": key},
            ).scalars()
            recorded = sorted(str(scope) for scope in scopes)
        assert recorded == sorted(["None", *(merchant["id"] for merchant in merchants)])
        final = await settle(client, ids)
        assert [transfer["state"] for transfer in final] == ["completed"] * len(ids)
        for i, payer in enumerate(payers):
            assert await balance_of(client, payer["name"]) == Decimal(100) - (i + 1)
        assert await balance_of(client, receiver["name"]) == Decimal(1 + 2 + 3 + 4 + 5)
        assert_ledger_consistent(sync_db)

    async def test_refusals_in_a_burst_answer_alone_and_the_rest_settle(
        self, client: httpx.AsyncClient, sync_db: SyncDatabase
    ) -> None:
        """Refusals at submission (unknown, archived, no balance in the currency) answer their
        own error and record nothing; three transfers of 40 from one balance of 100 (a group
        may name a balance several times) are accepted and exactly two complete; deposits,
        withdrawals and transfers of the same burst all settle."""
        payers, receiver = await funded_pairs(client, 4)
        overdrawn = await funded_merchant(client, "100")
        archived = await create_merchant(client)
        archive(sync_db, archived["id"])
        unknown = unique("nobody")
        key = {name: unique(name) for name in ("t0", "t1", "unknown", "archived", "btc", "w", "d")}
        overdraft_keys = [unique("over") for _ in range(3)]

        responses = await asyncio.gather(
            submit(client, payers[0]["name"], receiver["name"], "10", key=key["t0"]),
            submit(client, payers[1]["name"], receiver["name"], "11", key=key["t1"]),
            submit(client, payers[2]["name"], unknown, "1", key=key["unknown"]),
            submit(client, payers[2]["name"], archived["name"], "1", key=key["archived"]),
            submit(client, payers[3]["name"], receiver["name"], "1", "BTC", key=key["btc"]),
            move(client, "withdrawals", payers[2]["name"], "12", key["w"]),
            move(client, "deposits", receiver["name"], "13", key["d"]),
            *(
                submit(client, overdrawn["name"], receiver["name"], "40", key=overdraft_key)
                for overdraft_key in overdraft_keys
            ),
        )
        t0, t1, to_unknown, to_archived, in_btc, withdrawal, deposit, *overdraft = responses

        assert to_unknown.status_code == 404
        assert to_unknown.json() == {
            "status": 404,
            "error": "From merchant or to merchant does not exist",
        }
        assert to_archived.status_code == 400
        assert to_archived.json() == {
            "status": 400,
            "error": f"Merchant {archived['name']} is archived",
        }
        assert in_btc.status_code == 404
        assert in_btc.json() == {
            "status": 404,
            "error": "From merchant balance with currency BTC does not exist",
        }
        refused_keys = [key["unknown"], key["archived"], key["btc"]]
        assert keys_recorded(sync_db, refused_keys) == 0

        accepted = [t0, t1, withdrawal, deposit, *overdraft]
        for response in accepted:
            assert response.status_code == 202, response.text
        assert [r.json()["result"]["kind"] for r in (withdrawal, deposit)] == [
            "withdrawal",
            "deposit",
        ]

        ids = [response.json()["result"]["id"] for response in accepted]
        final = await settle(client, ids)
        assert [transfer["state"] for transfer in final[:4]] == ["completed"] * 4
        over = sorted((t["state"], t["failure_reason"]) for t in final[4:])
        assert over == [("completed", None), ("completed", None), ("failed", "Insufficient funds")]
        assert await balance_of(client, payers[0]["name"]) == Decimal(90)
        assert await balance_of(client, payers[1]["name"]) == Decimal(89)
        assert await balance_of(client, payers[2]["name"]) == Decimal(88)
        assert await balance_of(client, payers[3]["name"]) == Decimal(100)
        assert await balance_of(client, overdrawn["name"]) == Decimal(20)
        assert await balance_of(client, receiver["name"]) == Decimal(10 + 11 + 13 + 80)
        assert_ledger_consistent(sync_db)


class TestCommitsMetric:
    async def test_a_refused_submission_is_no_commit(
        self, api_client: httpx.AsyncClient, keyless: httpx.AsyncClient
    ) -> None:
        """`mini_ledger_submissions_per_commit` counts what was recorded by one statement: a
        submission refused (here: to a merchant that does not exist) records nothing."""
        sender = await funded_merchant(api_client, "10")
        before = await commits(keyless)
        response = await submit(api_client, sender["name"], unique("nobody"), "1")
        assert response.status_code == 404
        assert await commits(keyless) == before


def not_a_merchant(new: NewTransfer) -> NewTransfer:
    """A sender that is no merchant: the foreign key refuses the row (IntegrityError)."""
    return dataclasses.replace(new, sender_id=uuid.uuid4())


def currency_too_long(new: NewTransfer) -> NewTransfer:
    """A currency longer than the column holds: a DataError."""
    return dataclasses.replace(new, currency="X" * 11)


class TestRecorder:
    @pytest.mark.parametrize(
        ("spoil", "error"),
        [(not_a_merchant, IntegrityError), (currency_too_long, DataError)],
        ids=["foreign-key", "value-too-long"],
    )
    async def test_a_group_the_database_refuses_fails_only_the_faulty_submission(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        sync_db: SyncDatabase,
        spoil: Any,
        error: type[DBAPIError],
    ) -> None:
        senders, receiver = await funded_pairs(client, 4)
        amounts = [Decimal(1), Decimal(2), Decimal(3), Decimal(4)]
        news = new_transfers(
            [(sender, receiver, amount) for sender, amount in zip(senders, amounts, strict=True)]
        )
        news[1] = spoil(news[1])
        good = [news[0], news[2], news[3]]
        sizes: list[int] = []
        recorder = fresh_recorder(app, sizes)

        async with asyncio.timeout(ANSWER_GUARD_S):
            answers = await asyncio.gather(
                *(recorder.record(new, None) for new in news), return_exceptions=True
            )
            await recorder.close()

        # The group's statement was refused (it recorded nothing, so it counts as no commit);
        # then each was tried alone: the three good ones were recorded one by one.
        assert sizes == [1, 1, 1]
        assert isinstance(answers[1], error), answers[1]
        for new, answer in zip(news, answers, strict=True):
            if new is news[1]:
                continue
            assert isinstance(answer, Transfer), answer
            assert answer.id == new.id
            assert answer.idempotency_key == new.idempotency_key
            assert answer.amount == new.amount
            assert answer.state is TransferState.PENDING
        assert ids_recorded(sync_db, [news[1].id]) == 0
        assert keys_recorded(sync_db, [news[1].idempotency_key]) == 0
        assert ids_recorded(sync_db, [new.id for new in good]) == len(good)

        # Handed to the workers as well (each recorded alone, in a message of its own).
        final = await settle(client, [str(new.id) for new in good])
        assert [transfer["state"] for transfer in final] == ["completed"] * 3
        for i in (0, 2, 3):
            assert await balance_of(client, senders[i]["name"]) == Decimal(100) - amounts[i]
        assert await balance_of(client, senders[1]["name"]) == Decimal(100)
        assert await balance_of(client, receiver["name"]) == Decimal(1 + 3 + 4)

        # Alone, the faulty one fails again; the recorder goes on recording after it.
        (later,) = new_transfers([(senders[1], receiver, Decimal(5))])
        with pytest.raises(error):
            await recorder.record(spoil(later), None)
        recorded = await recorder.record(later, None)
        assert recorded is not None and recorded.id == later.id
        assert sizes == [1, 1, 1, 1]  # A statement that recorded nothing is no commit.
        (settled,) = await settle(client, [str(later.id)])
        assert settled["state"] == "completed"
        assert_ledger_consistent(sync_db)

    async def test_one_key_several_times_in_one_group_records_one_per_scope(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        """Duplicates in one statement: three submissions under one key in the platform's
        scope and one under the same key in a merchant's scope, one group. One of the
        platform's three is recorded (the others answer None: the key is taken, their callers
        answer with its transfer), and the merchant's is recorded too, each answer by its id."""
        senders, receiver = await funded_pairs(client, 3)
        key = unique("dup")
        platform = [
            dataclasses.replace(new, idempotency_key=key)
            for new in new_transfers(
                [(sender, receiver, Decimal(i + 1)) for i, sender in enumerate(senders)]
            )
        ]
        (merchants,) = new_transfers([(senders[0], receiver, Decimal(7))])
        merchants = dataclasses.replace(
            merchants, idempotency_key=key, idempotency_scope=uuid.UUID(senders[0]["id"])
        )
        news = [platform[0], merchants, platform[1], platform[2]]
        sizes: list[int] = []
        recorder = fresh_recorder(app, sizes)

        async with asyncio.timeout(ANSWER_GUARD_S):
            answers = await asyncio.gather(*(recorder.record(new, None) for new in news))
            await recorder.close()

        assert sizes == [4]
        assert answers[1] is not None and answers[1].id == merchants.id
        platform_answers = [answers[0], answers[2], answers[3]]
        winners = [answer for answer in platform_answers if answer is not None]
        assert len(winners) == 1
        (winner,) = [new for new in platform if new.id == winners[0].id]
        assert winners[0].amount == winner.amount
        assert winners[0].sender_id == winner.sender_id
        with sync_db.transaction() as connection:
            stored = connection.execute(
                text("SELECT id, idempotency_scope FROM transfers WHERE idempotency_key = :k"),
                {"k": key},
            ).all()
        assert sorted((row.id, str(row.idempotency_scope)) for row in stored) == sorted(
            [(winner.id, "None"), (merchants.id, senders[0]["id"])]
        )

        final = await settle(client, [str(winner.id), str(merchants.id)])
        assert [transfer["state"] for transfer in final] == ["completed"] * 2
        paid = {sender["id"]: Decimal(0) for sender in senders}
        paid[str(winner.sender_id)] += winner.amount
        paid[senders[0]["id"]] += Decimal(7)
        for sender in senders:
            assert await balance_of(client, sender["name"]) == Decimal(100) - paid[sender["id"]]
        assert await balance_of(client, receiver["name"]) == winner.amount + Decimal(7)
        assert_ledger_consistent(sync_db)

    @pytest.mark.parametrize("stage", ["queued", "in-flight"])
    async def test_a_waiter_that_goes_away_is_still_recorded_once(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase, stage: str
    ) -> None:
        """A client that goes away cancels its wait, not the group: its transfer is recorded
        (exactly once) and handed over, the group's other waiters get their answers, and the
        recorder records the next submission. `queued`: cancelled before the group's
        statement ran; `in-flight`: while the statement waits on a row lock held elsewhere."""
        database: Database = app.state.database
        senders, receiver = await funded_pairs(client, 4)
        *news, later = new_transfers(
            [(sender, receiver, Decimal(i + 1)) for i, sender in enumerate(senders)]
        )
        sizes: list[int] = []
        recorder = fresh_recorder(app, sizes)

        async with asyncio.timeout(ANSWER_GUARD_S), database.engine.connect() as blocking:
            # A real transaction (the API's pool is in autocommit), held open until rolled back.
            await blocking.execution_options(isolation_level="READ COMMITTED")
            blocker = await blocking.begin()
            if stage == "in-flight":
                # The same key as the group's last, uncommitted: the group's INSERT ... ON
                # CONFLICT waits on it until this transaction ends.
                twin = dataclasses.replace(news[-1], id=uuid.uuid4())
                await TransferRepository(blocking).insert_pending_many([twin])
                blocker_pid = (await blocking.execute(text("SELECT pg_backend_pid()"))).scalar()
            waiters = [asyncio.create_task(recorder.record(new, None)) for new in news]
            await asyncio.sleep(0)  # Each waiter runs up to its wait: all three are queued.
            if stage == "in-flight":
                await statement_blocked_by(database, blocker_pid)
            assert not waiters[0].done()
            waiters[0].cancel()
            await blocker.rollback()
            answers = await asyncio.gather(*waiters, return_exceptions=True)
            await recorder.close()

        assert isinstance(answers[0], asyncio.CancelledError)
        assert waiters[0].cancelled()
        for new, answer in zip(news[1:], answers[1:], strict=True):
            assert isinstance(answer, Transfer), answer
            assert answer.id == new.id
        assert sizes == [3]
        assert ids_recorded(sync_db, [news[0].id]) == 1
        assert keys_recorded(sync_db, [new.idempotency_key for new in news]) == 3
        if stage == "in-flight":
            assert ids_recorded(sync_db, [twin.id]) == 0

        async with asyncio.timeout(ANSWER_GUARD_S):
            recorded = await recorder.record(later, None)
        assert recorded is not None and recorded.id == later.id
        assert sizes == [3, 1]

        ids = [str(new.id) for new in (*news, later)]
        final = await settle(client, ids)
        assert [transfer["state"] for transfer in final] == ["completed"] * 4
        for i, sender in enumerate(senders):
            assert await balance_of(client, sender["name"]) == Decimal(100) - (i + 1)
        assert await balance_of(client, receiver["name"]) == Decimal(1 + 2 + 3 + 4)
        assert_ledger_consistent(sync_db)


async def statement_blocked_by(database: Database, blocker_pid: Any) -> None:
    """Until a session waits on a lock the blocking session holds: the group's statement."""
    while True:
        async with database.autocommit() as connection:
            blocked = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": blocker_pid},
                )
            ).scalar_one()
        if blocked:
            return
        await asyncio.sleep(0.01)


class TestAnswersNeverWaitOnOthers:
    async def test_a_key_held_by_an_open_transaction_holds_no_other_submission(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        """A key another transaction is inserting and has not committed (a batch, say): its
        submission waits for that transaction, and the rest of its group, and the groups after
        it, are answered meanwhile."""
        database: Database = app.state.database
        senders, receiver = await funded_pairs(client, 3)
        busy, grouped, later = new_transfers(
            [(sender, receiver, Decimal(i + 1)) for i, sender in enumerate(senders)]
        )
        recorder = fresh_recorder(app, [])
        async with asyncio.timeout(ANSWER_GUARD_S), database.transaction() as blocking:
            await TransferRepository(blocking).insert_pending_many(
                [dataclasses.replace(busy, id=uuid.uuid4())]
            )
            waiting = asyncio.create_task(recorder.record(busy, None))
            answered = await asyncio.gather(
                recorder.record(grouped, None), recorder.record(later, None)
            )
            # Answered while the key is still held: the open transaction has not ended yet.
            assert [a.id for a in answered if a is not None] == [grouped.id, later.id]
            assert not waiting.done()
            await blocking.rollback()
        async with asyncio.timeout(ANSWER_GUARD_S):
            recorded = await waiting
            await recorder.close()
        assert recorded is not None and recorded.id == busy.id
        assert keys_recorded(sync_db, [busy.idempotency_key]) == 1
        final = await settle(client, [str(t.id) for t in (busy, grouped, later)])
        assert [transfer["state"] for transfer in final] == ["completed"] * 3
        assert_ledger_consistent(sync_db)

    async def test_a_replay_wins_over_a_refusal_in_the_same_group(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        """Two submissions of one key in one group, the second refused (its receiver does not
        exist): it is answered after the first is recorded, so as a reused key (422), never
        with a 404 that would say the key is still free."""
        sender = await funded_merchant(client, "100")
        receiver = await create_merchant(client)
        recorder = fresh_recorder(app, [])
        key = unique("contested")
        valid = TransferRequest(sender["name"], receiver["name"], Decimal(1), "USD")
        refused = TransferRequest(sender["name"], unique("nobody"), Decimal(1), "USD")
        database: Database = app.state.database
        async with asyncio.timeout(ANSWER_GUARD_S):
            first, second = await asyncio.gather(
                transfers.submit_transfer(database, recorder, OPERATOR, valid, key, None),
                transfers.submit_transfer(database, recorder, OPERATOR, refused, key, None),
                return_exceptions=True,
            )
        assert isinstance(first, transfers.Submission) and not first.replayed
        assert isinstance(second, IdempotencyKeyReused), second
        await settle(client, [str(first.transfer.id)])

    async def test_a_failure_after_the_insert_leaves_nobody_waiting(
        self, client: httpx.AsyncClient, app: FastAPI, sync_db: SyncDatabase
    ) -> None:
        """Whatever raises once a group is recorded (here the metrics hook), every submission
        of it is answered, and the recorder records the next group."""
        senders, receiver = await funded_pairs(client, 3)
        first, second, later = new_transfers(
            [(sender, receiver, Decimal(i + 1)) for i, sender in enumerate(senders)]
        )
        calls: list[int] = []

        def broken_metrics(size: int) -> None:
            calls.append(size)
            if len(calls) == 1:
                raise RuntimeError("metrics broke")

        database: Database = app.state.database
        recorder = PendingRecorder(database, app.state.publisher, on_group=broken_metrics)
        async with asyncio.timeout(ANSWER_GUARD_S):
            answers = await asyncio.gather(
                recorder.record(first, None), recorder.record(second, None)
            )
            recorded = await recorder.record(later, None)
            await recorder.close()
        # Answered with what was recorded, and handed over (the answers and the message come
        # before the hook).
        assert [a.id for a in answers if a is not None] == [first.id, second.id]
        assert recorded is not None and recorded.id == later.id
        assert calls == [2, 1]
        final = await settle(client, [str(t.id) for t in (first, second, later)])
        assert [transfer["state"] for transfer in final] == ["completed"] * 3
        assert_ledger_consistent(sync_db)
