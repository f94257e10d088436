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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import DataError, IntegrityError

from shared.db.transfers import TransferRepository
from shared.domain.errors import DependencyUnavailable, LedgerError
from shared.domain.submissions import PartiesWanted
from shared.domain.transfers import NewTransfer, Transfer, TransferRequest
from shared.infra import clock
from shared.infra.database import Database, LockBusy, connection_lost
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
    refusal: Exception | None = None  # Why planning refused it (answered after the insert).


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
        # Publishes and lock-waiting submissions under way beside the runner (see `close`).
        self._aside: set[asyncio.Task[None]] = set()

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
        """Let the work under way finish (at shutdown, after the last request)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)
        while self._aside:
            await asyncio.gather(*self._aside, return_exceptions=True)

    @staticmethod
    def _answer() -> asyncio.Future[Transfer | None]:
        return asyncio.get_running_loop().create_future()

    async def _join(self, waiting: _Waiting) -> Transfer | None:
        self._waiting.append(waiting)
        if self._runner is None:
            # A task of its own: a client that goes away cancels its wait, never the group.
            self._runner = asyncio.create_task(self._record_waiting(), name="pending-recorder")
        return await waiting.answer

    def _beside(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    async def _record_waiting(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    await self._record_group(group)
                except Exception as error:  # A bug: its group answers 500, the next one runs.
                    log.exception("recording a group of submissions failed")
                    for waiting in group:
                        _settle(waiting.answer, error=error)
        finally:
            self._runner = None

    async def _record_group(self, group: list[_Waiting]) -> None:
        created: dict[uuid.UUID, Transfer] = {}
        try:
            created = await self._plan_and_insert(group)
        except (LockBusy, _Refused):
            # A key of the group is being inserted by a transaction still open elsewhere (a
            # batch, say), whose wait must not hold every other submission of this process; or
            # the database refused a value: each alone, beside the runner.
            for waiting in group:
                self._beside(self._record_alone(waiting))
            return
        except Exception as error:  # Each submission of the group answers with it (503, 500).
            for waiting in group:
                _settle(waiting.answer, error=error)
            return
        finally:
            # Whatever happened, nobody is left waiting: refusals now (after the insert, so a
            # replay of a key this group just recorded wins over them), then the results.
            for waiting in group:
                if waiting.refusal is not None:
                    _settle(waiting.answer, error=waiting.refusal)
        self._hand_over(group, created)

    def _hand_over(self, group: list[_Waiting], created: dict[uuid.UUID, Transfer]) -> None:
        """Answer the group's submissions, count them, and publish one message for those
        recorded, beside the runner: the answers do not depend on it (the sweep enqueues what
        a failed publish could not), and a slow broker must not hold the next group."""
        recorded: list[tuple[Transfer, str | None]] = []
        for waiting in group:
            if waiting.new is None:
                continue
            transfer = created.get(waiting.new.id)
            _settle(waiting.answer, result=transfer)
            if transfer is not None:
                recorded.append((transfer, waiting.request_id))
        if recorded:
            self._beside(self._publisher.publish_transfers(recorded))
        for kind, count in Counter(transfer.kind for transfer, _ in recorded).items():
            count_submitted(kind, count)
        if inserted := sum(waiting.new is not None for waiting in group):  # Refusals are not.
            self._on_group(inserted)

    async def _plan_and_insert(self, group: list[_Waiting]) -> dict[uuid.UUID, Transfer]:
        try:
            return await self._plan_and_insert_once(group)
        except DependencyUnavailable as error:
            if not connection_lost(error):
                raise
        # A pooled connection a restarted PostgreSQL broke: the pool has replaced its peers;
        # once more on a fresh one (the same ids: an insert that did commit now conflicts).
        log.warning("database connection lost, recording the group again")
        return await self._plan_and_insert_once(group)

    async def _plan_and_insert_once(self, group: list[_Waiting]) -> dict[uuid.UUID, Transfer]:
        async with self._db.autocommit() as connection:
            repository = TransferRepository(connection)
            unplanned = [(w, w.asked) for w in group if w.asked is not None and w.new is None]
            await _plan(repository, [(w, a) for w, a in unplanned if w.refusal is None])
            planned = [w.new for w in group if w.new is not None]
            try:
                return await repository.insert_pending_many(planned)
            except (IntegrityError, DataError) as error:
                # A value the database will not store: never expected, every value was checked.
                if len(planned) == 1:
                    raise
                log.warning("group of submissions refused by the database, recording each alone")
                raise _Refused() from error

    async def _record_alone(self, waiting: _Waiting) -> None:
        """A planned submission of a group that could not be recorded together, alone, in a
        transaction that waits for its key as long as any transaction may: only the submission
        at fault fails, only the one whose key is busy waits."""
        new = waiting.new
        if new is None or waiting.answer.done():
            return
        try:
            async with self._db.transaction() as connection:
                created = await TransferRepository(connection).insert_pending_many([new])
        except Exception as error:
            _settle(waiting.answer, error=error)
            return
        self._hand_over([waiting], created)


class _Refused(Exception):
    """The database refused a value of the group's insert: which one, recording each tells."""


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
            waiting.refusal = refusal
        except Exception as error:  # A bug in one submission's plan fails it alone (500).
            log.exception("submission could not be planned", key=asked.key)
            waiting.refusal = error


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
