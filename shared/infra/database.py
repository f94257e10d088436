"""The unit of work: `async with db.transaction() as connection` commits or rolls back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from psycopg.errors import LockNotAvailable
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.domain.errors import DependencyUnavailable

# A lost connection, a pool exhausted, a statement or lock timeout: the transaction rolled back,
# nothing was written, and trying again later is the right answer.
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError, OSError)


class LockBusy(DependencyUnavailable):
    """A statement's wait for a row lock ran out (`lock_timeout`): nothing was written."""


def connection_lost(error: BaseException) -> bool:
    """`DependencyUnavailable` because the connection broke (a restarted PostgreSQL): the pool
    replaces its connections, so trying again on a fresh one may well work."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and cause.connection_invalidated


def _unavailable(error: Exception) -> DependencyUnavailable:
    message = "Database is unavailable, try again later"
    if isinstance(getattr(error, "orig", None), LockNotAvailable):
        return LockBusy(message)
    return DependencyUnavailable(message)


class WriteRefused(Exception):
    """The database refused a write (a constraint, a value out of range): a retry cannot help."""


# The API's connections wait briefly for row locks (`API_LOCK_TIMEOUT_MS`); a transaction, for
# as long as a statement may run. SET LOCAL: it ends with the transaction.
_LOCK_WAIT_AS_STATEMENT = text(
    "SELECT set_config('lock_timeout', current_setting('statement_timeout'), true)"
)


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A READ COMMITTED transaction, committed when the block ends (rolled back if it
        raises). The pool's connections are in autocommit (`create_api_engine`): this one
        leaves it for the block, and waits for row locks as long as a statement may."""
        try:
            async with self.engine.connect() as connection:
                await connection.execution_options(isolation_level="READ COMMITTED")
                async with connection.begin():
                    await connection.execute(_LOCK_WAIT_AS_STATEMENT)
                    yield connection
        except UNAVAILABLE_ERRORS as error:
            raise _unavailable(error) from error

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only REPEATABLE READ transaction: every statement of the block reads the
        same snapshot (and, reading only, waits for no row lock)."""
        try:
            async with self.engine.connect() as connection:
                await connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                async with connection.begin():
                    yield connection
        except UNAVAILABLE_ERRORS as error:
            raise _unavailable(error) from error

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection on which every statement commits on its own (the pool's mode).

        For reads, and for a use case whose only write is a single statement: no BEGIN and no
        COMMIT round trips. Isolation is what READ COMMITTED gives anyway, a snapshot per
        statement.
        """
        try:
            async with self.engine.connect() as connection:
                yield connection
        except UNAVAILABLE_ERRORS as error:
            raise _unavailable(error) from error

    async def ping(self) -> None:
        async with self.autocommit() as connection:
            await connection.execute(text("SELECT 1"))


class SyncDatabase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except (IntegrityError, DataError) as error:
            raise WriteRefused(str(error.orig)) from error
