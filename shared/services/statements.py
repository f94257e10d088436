"""Statements: the journal of one merchant balance over a window, paginated."""

from __future__ import annotations

from uuid import UUID

from shared.db.statements import StatementRepository
from shared.domain.access import Actor
from shared.domain.errors import (
    InvalidCursor,
    InvariantViolation,
    MerchantBalanceNotFound,
    MerchantNotFound,
)
from shared.domain.statements import (
    Statement,
    StatementCursor,
    VersionRange,
    Window,
    check_page,
    request_scope,
)
from shared.infra.database import Database


async def get_statement(
    db: Database,
    actor: Actor,
    merchant_name: str,
    currency: str,
    window: Window,
    cursor: str | None,
    limit: int,
) -> Statement:
    """One page of a balance's journal over `window`, oldest first; a merchant key sees only
    its own merchant (others do not exist).

    The first page pins the window as a range of the account's versions and hands it on in
    `next_cursor`; every page reads that range, in one snapshot, so the opening and closing
    balances are the same on every page and nothing is skipped or repeated, whatever settles
    in between.
    """
    if not actor.is_admin and merchant_name != actor.merchant_name:
        raise MerchantNotFound(merchant_name)
    resumed = None if cursor is None else StatementCursor.decode(cursor)
    async with db.snapshot() as connection:  # Every statement of a page, one journal.
        repository = StatementRepository(connection)
        account = await repository.get_account(merchant_name, currency)
        if account is None:
            raise MerchantNotFound(merchant_name)
        if account.account_id is None:
            raise MerchantBalanceNotFound(currency)
        scope = request_scope(account.account_id, window)
        if resumed is None:
            versions = await _pin(repository, account.account_id, account.version, window)
            after = versions.low
        else:
            resumed.require_scope(scope)
            versions, after = resumed.versions, resumed.after
        balances = await repository.balances_at(
            account.account_id, {versions.low, versions.high, after}
        )
        rows = await repository.list_entries(account.account_id, after, versions.high, limit + 1)
    if len(balances) < len({versions.low, versions.high, after}):
        if resumed is None:
            raise InvariantViolation(f"account {account.account_id} misses a journal entry")
        # Versions this balance has not reached: not a cursor a page handed out.
        raise InvalidCursor()
    page, more = rows[:limit], len(rows) > limit
    check_page(after, balances[after], page, last=None if more else versions.high)
    next_cursor = None
    if more:
        next_cursor = StatementCursor(versions, page[-1].version, scope).encode()
    return Statement(
        merchant=merchant_name,
        currency=currency,
        window=window,
        opening_balance=balances[versions.low],
        closing_balance=balances[versions.high],
        entries=page,
        next_cursor=next_cursor,
    )


async def _pin(
    repository: StatementRepository, account_id: UUID, version: int, window: Window
) -> VersionRange:
    """The window as versions: after the last one posted before `start` (0 without it), up to
    the last one posted before `end` (the current `version` without it)."""
    moments = [moment for moment in (window.start, window.end) if moment is not None]
    found = iter(await repository.last_versions_before(account_id, version, moments))
    low = 0 if window.start is None else next(found)
    high = version if window.end is None else next(found)
    # min(): only a clock stepping back between two postings could put `low` above `high`.
    return VersionRange(min(low, high), high)
