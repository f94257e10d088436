"""Group commit for submissions: the submissions one API process receives while it is recording
others are recorded together — their parties read by one statement, the transfers inserted by
one more — and handed to the workers as one message.

With nothing else in flight a submission is recorded at once, alone, so a quiet ledger pays no
wait; under load each group carries every submission that arrived during the one before, so the
database's statements and the broker's messages grow far slower than the submissions do. Each
submission still gets its own answer: its transfer; None when its Idempotency-Key was taken
(its caller then answers with the key's transfer); or its own refusal or error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import DataError, IntegrityError

from shared.db.transfers import TransferRepository
from shared.domain.errors import LedgerError
from shared.domain.submissions import PartiesWanted
from shared.domain.transfers import NewTransfer, Transfer, TransferRequest
from shared.infra import clock
from shared.infra.database import Database
from shared.infra.queue import TransferPublisher
from shared.services.operations import count_submitted

log = structlog.get_logger(__name__)

# The most submissions one group carries. Under any load a process can take, groups stay far
# below it; it bounds one message's size and one worker transaction's length.
MAX_GROUP = 200


@dataclass(frozen=True, slots=True)
class Asked:
    """A submission whose parties the group reads: the request, under its key's scope."""

    request: TransferRequest
    scope: uuid.UUID | None
    key: str


@dataclass(slots=True)
class _Waiting:
    answer: asyncio.Future[Transfer | None]
    request_id: str | None
    asked: Asked | None = None
    new: NewTransfer | None = None  # Known on arrival (a reversal), or planned by the group.


class PendingRecorder:
    """Records new pending transfers for one event loop: one group at a time, in order.

    `on_group` is told how many submissions each group's statement carried (the API's
    metrics); a group whose submissions were all refused ran none.
    """

    def __init__(
        self,
        db: Database,
        publisher: TransferPublisher,
        on_group: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._on_group = on_group
        self._waiting: list[_Waiting] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, asked: Asked, request_id: str | None) -> Transfer | None:
        """Check `asked` against its parties as they are now, record it as pending and hand it
        to the workers; None when its key is already taken. A refusal raises its LedgerError,
        and records nothing."""
        return await self._join(_Waiting(self._answer(), request_id, asked=asked))

    async def record(self, new: NewTransfer, request_id: str | None) -> Transfer | None:
        """Record `new`, planned already, as pending and hand it to the workers; None when its
        key is already taken."""
        return await self._join(_Waiting(self._answer(), request_id, new=new))

    async def close(self) -> None:
        """Let the group under way finish (at shutdown, after the last request)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)

    @staticmethod
    def _answer() -> asyncio.Future[Transfer | None]:
        return asyncio.get_running_loop().create_future()

    async def _join(self, waiting: _Waiting) -> Transfer | None:
        self._waiting.append(waiting)
        if self._runner is None:
            # A task of its own: a client that goes away cancels its wait, never the group.
            self._runner = asyncio.create_task(self._record_waiting(), name="pending-recorder")
        return await waiting.answer

    async def _record_waiting(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                await self._record_group(group)
        finally:
            self._runner = None

    async def _record_group(self, group: list[_Waiting]) -> None:
        try:
            created = await self._plan_and_insert(group)
        except Exception as error:  # Each submission of the group answers with it (503, 500).
            for waiting in group:
                _settle(waiting.answer, error=error)
            return
        recorded = [
            (created[w.new.id], w.request_id)
            for w in group
            if w.new is not None and w.new.id in created
        ]
        for kind, count in Counter(transfer.kind for transfer, _ in recorded).items():
            count_submitted(kind, count)
        if inserted := sum(waiting.new is not None for waiting in group):  # Refusals are not.
            self._on_group(inserted)
        if recorded:
            await self._publisher.publish_transfers(recorded)  # One message names the group.
        for waiting in group:
            new = waiting.new
            _settle(waiting.answer, result=None if new is None else created.get(new.id))

    async def _plan_and_insert(self, group: list[_Waiting]) -> dict[uuid.UUID, Transfer]:
        async with self._db.autocommit() as connection:
            repository = TransferRepository(connection)
            await _plan(repository, [(w, w.asked) for w in group if w.asked is not None])
            planned = [(w, w.new) for w in group if w.new is not None]
            try:
                return await repository.insert_pending_many([new for _, new in planned])
            except (IntegrityError, DataError):
                # A value the database will not store: never expected, every value was checked.
                if len(planned) == 1:
                    raise
        log.warning("group of submissions refused by the database, recording each alone")
        return await self._insert_each(planned)

    async def _insert_each(
        self, planned: list[tuple[_Waiting, NewTransfer]]
    ) -> dict[uuid.UUID, Transfer]:
        """Each alone, so only the submission at fault fails."""
        created: dict[uuid.UUID, Transfer] = {}
        for waiting, new in planned:
            try:
                async with self._db.autocommit() as connection:
                    created |= await TransferRepository(connection).insert_pending_many([new])
            except Exception as error:
                _settle(waiting.answer, error=error)
        return created


async def _plan(repository: TransferRepository, group: list[tuple[_Waiting, Asked]]) -> None:
    """Read every party of the group at once (one clock reading: submissions recorded together
    see the same volume), then plan each submission or refuse it on its own."""
    if not group:
        return
    wanted = PartiesWanted.of([asked.request for _, asked in group], clock.utc_now())
    counterparties = await repository.get_counterparties(wanted)
    for waiting, asked in group:
        try:
            waiting.new = counterparties.new_transfer(
                asked.request, asked.scope, asked.key, waiting.request_id
            )
        except LedgerError as refusal:
            _settle(waiting.answer, error=refusal)


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
