"""Group commit for submissions: the pending transfers one API process accepts while it is
recording others are recorded together, by one statement, and handed to the workers as one
message.

With nothing else in flight a submission is recorded at once, alone, so a quiet ledger pays no
wait; under load each commit carries every submission that arrived during the one before, so
the database's commits and the broker's messages grow with the load far slower than the
submissions do. Each submission still gets its own answer: its transfer, or None when its
Idempotency-Key was taken (its caller then answers with the key's transfer), or its own error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import DBAPIError

from shared.db.transfers import TransferRepository
from shared.domain.transfers import NewTransfer, Transfer
from shared.infra.database import Database
from shared.infra.queue import publish_transfers
from shared.services.operations import count_submitted

log = structlog.get_logger(__name__)

# The most submissions one commit carries. Under any load a process can take, groups stay far
# below it; it bounds one message's size and one worker transaction's length.
MAX_GROUP = 200


@dataclass(slots=True)
class _Waiting:
    new: NewTransfer
    request_id: str | None
    answer: asyncio.Future[Transfer | None]


class PendingRecorder:
    """Records new pending transfers for one event loop: one group at a time, in order.

    `on_group` is told each group's size once it is recorded (the API's metrics).
    """

    def __init__(self, db: Database, on_group: Callable[[int], None] = lambda _: None) -> None:
        self._db = db
        self._on_group = on_group
        self._waiting: list[_Waiting] = []
        self._runner: asyncio.Task[None] | None = None

    async def record(self, new: NewTransfer, request_id: str | None) -> Transfer | None:
        """Record `new` as pending and hand it to the workers, once committed; None when its
        Idempotency-Key is already taken (by an earlier or a concurrent submission)."""
        answer: asyncio.Future[Transfer | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(new, request_id, answer))
        if self._runner is None:
            # A task of its own: a client that goes away cancels its wait, never the group.
            self._runner = asyncio.create_task(self._record_waiting(), name="pending-recorder")
        return await answer

    async def close(self) -> None:
        """Let the group under way finish (at shutdown, after the last request)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)

    async def _record_waiting(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                await self._record_group(group)
        finally:
            self._runner = None

    async def _record_group(self, group: list[_Waiting]) -> None:
        try:
            created = await self._insert(group)
        except Exception as error:  # Each submission of the group answers with it (503, 500).
            for waiting in group:
                _settle(waiting.answer, error=error)
            return
        recorded = [created[w.new.id] for w in group if w.new.id in created]
        for kind, count in Counter(transfer.kind for transfer in recorded).items():
            count_submitted(kind, count)
        self._on_group(len(group))
        if recorded:
            # One message names the group; the request id rides along when there is one.
            request_id = group[0].request_id if len(group) == 1 else None
            await asyncio.to_thread(publish_transfers, recorded, request_id)
        for waiting in group:
            _settle(waiting.answer, result=created.get(waiting.new.id))

    async def _insert(self, group: list[_Waiting]) -> dict[uuid.UUID, Transfer]:
        """One statement for the group. Should the database refuse it (a value it will not
        store: never expected, every value was checked), each is tried alone, so only the
        submission at fault fails."""
        try:
            async with self._db.autocommit() as connection:
                return await TransferRepository(connection).insert_pending_many(
                    [waiting.new for waiting in group]
                )
        except DBAPIError:
            if len(group) == 1:
                raise
        log.warning("group of submissions refused by the database, recording each alone")
        created: dict[uuid.UUID, Transfer] = {}
        for waiting in group:
            try:
                created |= await self._insert([waiting])
            except Exception as error:
                _settle(waiting.answer, error=error)
        return created


def _settle(
    answer: asyncio.Future[Transfer | None],
    *,
    result: Transfer | None = None,
    error: Exception | None = None,
) -> None:
    """Answer a waiting submission, unless its client went away (its wait was cancelled)."""
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)
