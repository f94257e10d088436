"""What Flower sees: the task events the real workers send, captured by a real event receiver.

Flower builds its task list from these events alone (there is no result backend), so asserting on
them is asserting on what an operator sees: a transfer that ended failed is a failed task (and is
not retried), a sweep that found nothing sends nothing, one that found work shows its count.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.infra.database import SyncDatabase
from shared.infra.queue import (
    APPLY_GROUP_TASK,
    APPLY_TRANSFER_TASK,
    SWEEP_PENDING_TASK,
    celery_app,
)
from tests.helpers import (
    assert_ledger_consistent,
    balance_of,
    create_merchant,
    funded_merchant,
    record_pending,
    settle,
    submit,
)

DEADLINE_S = 30


class Events:
    """Every task event on the broker while the test runs, as Flower would receive them."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._heard = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with celery_app.connection_for_read() as connection:
            self._receiver = celery_app.events.Receiver(connection, handlers={"*": self._record})
            # Returns within a second of `should_stop` (kombu's drain interval).
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _record(self, event: dict[str, Any]) -> None:
        if event["type"] == "worker-heartbeat":
            self._heard = True
        if event["type"].startswith("task-"):
            with self._lock:
                self.seen.append(event)

    def start(self) -> None:
        """Listening once a worker's heartbeat (every 2 s) came through."""
        self._thread.start()
        deadline = time.monotonic() + DEADLINE_S
        while not self._heard:
            assert time.monotonic() < deadline and self._thread.is_alive(), "no worker heard"
            time.sleep(0.05)

    def stop(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)

    def names(self) -> dict[str, str]:
        """Task id -> task name, from the task-received events."""
        with self._lock:
            return {e["uuid"]: e["name"] for e in self.seen if e["type"] == "task-received"}

    def of(self, task_id: str) -> list[str]:
        with self._lock:
            return [e["type"] for e in self.seen if e["uuid"] == task_id]

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.seen if predicate(e)]


@pytest.fixture
def events(client: httpx.AsyncClient) -> Iterator[Events]:
    receiver = Events()
    receiver.start()
    yield receiver
    receiver.stop()


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def _sweeps_run() -> int:
    """How many sweeps the workers ran, by their own statistics (not by events)."""
    stats = celery_app.control.inspect(timeout=2).stats() or {}
    return sum(int(worker["total"].get(SWEEP_PENDING_TASK, 0)) for worker in stats.values())


async def test_a_failed_transfer_is_a_failed_task_never_retried(
    client: httpx.AsyncClient, events: Events, sync_db: SyncDatabase
) -> None:
    sender = await funded_merchant(client, "5")
    receiver = await create_merchant(client)
    response = await submit(client, sender["name"], receiver["name"], "10")
    (transfer,) = await settle(client, [response.json()["result"]["id"]])
    assert transfer["state"] == "failed"
    assert "insufficient funds" in transfer["failure_reason"].lower()

    def task_of_transfer() -> list[dict[str, Any]]:
        return events.matching(
            lambda e: e["type"] == "task-received" and transfer["id"] in e.get("args", "")
        )

    await _until(lambda: bool(task_of_transfer()), "the transfer's task was not received")
    task_id = task_of_transfer()[0]["uuid"]
    assert task_of_transfer()[0]["name"] == APPLY_TRANSFER_TASK
    await _until(lambda: "task-failed" in events.of(task_id), "the task did not fail")
    failed = events.matching(lambda e: e["uuid"] == task_id and e["type"] == "task-failed")[0]
    assert "TransferFailed" in failed["exception"] and transfer["id"] in failed["exception"]
    assert "failed=1" in failed["exception"]
    # Acknowledged, not retried and not redelivered: one delivery, one outcome.
    await asyncio.sleep(1)
    assert events.of(task_id) == ["task-received", "task-started", "task-failed"]
    assert len(task_of_transfer()) == 1
    assert await balance_of(client, sender["name"]) == Decimal(5)
    assert_ledger_consistent(sync_db)


async def test_a_completed_transfer_is_a_success_with_its_counts(
    client: httpx.AsyncClient, events: Events
) -> None:
    sender = await funded_merchant(client, "50")
    receiver = await create_merchant(client)
    response = await submit(client, sender["name"], receiver["name"], "10")
    transfer_id = response.json()["result"]["id"]
    assert (await settle(client, [transfer_id]))[0]["state"] == "completed"

    def succeeded() -> list[dict[str, Any]]:
        received = events.matching(
            lambda e: e["type"] == "task-received" and transfer_id in e.get("args", "")
        )
        ids = {e["uuid"] for e in received}
        return events.matching(lambda e: e["type"] == "task-succeeded" and e["uuid"] in ids)

    await _until(lambda: bool(succeeded()), "the transfer's task did not succeed")
    assert "'completed': 1" in succeeded()[0]["result"]
    assert "'failed': 0" in succeeded()[0]["result"]


async def test_idle_sweeps_send_no_events_and_a_sweep_with_work_shows(
    client: httpx.AsyncClient, app: FastAPI, events: Events
) -> None:
    def sweep_events() -> list[dict[str, Any]]:
        sweeps = {i for i, name in events.names().items() if name == SWEEP_PENDING_TASK}
        return events.matching(lambda e: e["uuid"] in sweeps)

    before = _sweeps_run()
    await _until(lambda: _sweeps_run() >= before + 3, "beat did not sweep")
    # Every task event names its task; none is an idle sweep (one with work reports >0).
    named = events.names()
    assert all(e["uuid"] in named for e in events.seen if e["type"] != "task-received")
    for event in sweep_events():
        if event["type"] == "task-succeeded":
            assert int(event["result"]) > 0
    runs_seen = len([e for e in sweep_events() if e["type"] == "task-received"])
    assert runs_seen < _sweeps_run() - before

    # A transfer recorded but never enqueued: the sweep finds it, and shows.
    sender = await funded_merchant(client, "20")
    receiver = await create_merchant(client)
    (lost,) = await record_pending(
        app.state.database, [(sender["name"], receiver["name"], Decimal(3))]
    )

    def found_it() -> bool:
        return any(e["type"] == "task-succeeded" and int(e["result"]) >= 1 for e in sweep_events())

    await _until(found_it, "no sweep reported the work it found")

    def groups_done() -> bool:
        groups = {i for i, name in events.names().items() if name == APPLY_GROUP_TASK}
        done = events.matching(lambda e: e["type"] == "task-succeeded" and e["uuid"] in groups)
        return any("'completed': 1" in e["result"] for e in done)

    await _until(groups_done, "the group the sweep published did not show its counts")
    assert await balance_of(client, receiver["name"]) == Decimal(3), str(lost.id)
