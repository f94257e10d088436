"""Statements: the journal of one balance over a window of time, page by page.

A statement's window `[from, to)` is pinned on its first page as a range of the account's
versions, `(low, high]`: `low` is the last version posted before `from`, `high` the last one
posted before `to` (the current version without `to`). Entries are stamped when written, under
the account's row lock, so an account's posting times grow with its versions and a window of
time is exactly such a range. Every later page reads the same range, carried by the cursor, so
the opening and closing balances are the same on every page, and opening + the amounts of all
pages = closing, however many transfers settle while a client pages.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from shared.domain.errors import InvalidCursor, InvalidInput, InvariantViolation
from shared.domain.money import add_amounts

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Versions are BIGINTs: 18 digits always fit, so no cursor can make PostgreSQL overflow.
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,17})$", re.ASCII)
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,200}$", re.ASCII)
MOMENT_EXAMPLE = "2025-01-15T09:30:00Z"


class EntryKind(StrEnum):
    """What moved a balance: the kind of its transfer, or the amount it was opened with."""

    INITIAL = "initial"
    TRANSFER = "transfer"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    REVERSAL = "reversal"


def parse_moment(value: object, *, what: str) -> datetime:
    """An ISO 8601 time with its offset (`Z`, `+01:00`), as UTC; a time without one is
    refused, since it would name a different moment in every timezone."""
    message = f"{what} must be an ISO 8601 time with a timezone, e.g. {MOMENT_EXAMPLE}"
    if not isinstance(value, str):
        raise InvalidInput(message)
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise InvalidInput(message)
        # Out of range once in UTC: 0001-01-01T00:00:00+01:00 is in year 0.
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidInput(message) from error


@dataclass(frozen=True, slots=True)
class Window:
    """Postings at `start` or later and before `end`; None: unbounded on that side."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidInput("from must be earlier than to")


@dataclass(frozen=True, slots=True)
class StatementAccount:
    """A merchant looked up by name, with its balance (account) in one currency, if any."""

    merchant_id: UUID
    account_id: UUID | None
    version: int


@dataclass(frozen=True, slots=True)
class VersionRange:
    """The entries of a window: versions `low` (exclusive) to `high` (inclusive)."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise InvariantViolation(f"version range ({self.low}, {self.high}] is empty")


@dataclass(frozen=True, slots=True)
class StatementEntry:
    version: int
    transfer_id: UUID | None
    kind: EntryKind
    amount: Decimal  # signed: what the posting did to the balance
    balance_after: Decimal
    posted: datetime


@dataclass(frozen=True, slots=True)
class Statement:
    merchant: str
    currency: str
    window: Window
    opening_balance: Decimal
    closing_balance: Decimal
    entries: list[StatementEntry]
    next_cursor: str | None


def _microseconds(moment: datetime | None) -> str:
    return "" if moment is None else str((moment - _EPOCH) // _MICROSECOND)


def request_scope(account_id: UUID, window: Window) -> str:
    """What a cursor must be used with: the balance and the window it was made for."""
    return f"{account_id.hex}~{_microseconds(window.start)}~{_microseconds(window.end)}"


@dataclass(frozen=True, slots=True)
class StatementCursor:
    """Where the next page starts: after version `after` of the pinned `versions`."""

    versions: VersionRange
    after: int
    scope: str

    def encode(self) -> str:
        raw = f"{self.versions.low}.{self.versions.high}.{self.after}.{self.scope}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> StatementCursor:
        """The cursor a page handed out; anything else is `InvalidCursor`."""
        try:
            if not _CURSOR.match(cursor):
                raise ValueError("not a cursor")
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            low, high, after, scope = raw.split(".", 3)
            if not all(_VERSION.match(number) for number in (low, high, after)):
                raise ValueError("not a version")
            if not int(low) <= int(after) < int(high):
                raise ValueError("outside its range")
            return cls(VersionRange(int(low), int(high)), int(after), scope)
        except (ValueError, binascii.Error, UnicodeDecodeError) as error:
            raise InvalidCursor() from error

    def require_scope(self, scope: str) -> None:
        """A cursor continues only the statement it came from (same balance, same window)."""
        if self.scope != scope:
            raise InvalidCursor()


def check_page(
    after: int, balance: Decimal, entries: Sequence[StatementEntry], last: int | None
) -> None:
    """Each entry follows the one before it: the next version, and `balance_after` = the
    previous balance + `amount`; a statement's last page ends at its `last` version. A page
    that breaks this would show a journal with a hole."""
    for entry in entries:
        balance = add_amounts(balance, entry.amount)
        after += 1
        if entry.version != after or entry.balance_after != balance:
            raise InvariantViolation(
                f"journal entry {entry.version} does not follow version {after - 1}"
            )
    if last is not None and after != last:
        raise InvariantViolation(f"journal ends at version {after}, expected {last}")
