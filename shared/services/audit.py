"""The ledger check as a use case: every invariant of SPEC.md, from the database, as a report
with one human-readable problem per broken rule (`GET /v1/audit`, `mini-ledger audit`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import Connection

from shared.db.audit import CurrencyTotals, LedgerCheck, check_ledger
from shared.domain.access import Actor
from shared.domain.errors import DependencyUnavailable
from shared.domain.money import format_amount, negate
from shared.infra.database import UNAVAILABLE_ERRORS, Database, SyncDatabase
from shared.services.operations import record_audit, record_audit_async

# Each rule's problem, singular and plural, in the order of SPEC's invariants. Conservation is
# told per currency, with its totals (`_conservation_problem`).
PROBLEMS: dict[str, tuple[str, str] | None] = {
    "negative_balances": ("{n} balance is negative", "{n} balances are negative"),
    "balances_not_matching_journal": (
        "{n} balance does not match the journal",
        "{n} balances do not match the journal",
    ),
    "broken_balance_history": (
        "{n} journal entry does not follow from the one before it on its balance",
        "{n} journal entries do not follow from the one before them on their balance",
    ),
    "balance_history_checksums": (
        "{n} balance's history does not add up, though no single entry was found wrong",
        "{n} balances' histories do not add up, though no single entry was found wrong",
    ),
    "unbalanced_movements": (
        "{n} movement does not sum to zero",
        "{n} movements do not sum to zero",
    ),
    "initial_amounts_not_regular": (
        "{n} initial amount is not a merchant's credit against the issuance account",
        "{n} initial amounts are not a merchant's credit against the issuance account",
    ),
    "currencies_not_conserved": None,
    "completed_without_postings": (
        "{n} completed transfer has no postings",
        "{n} completed transfers have no postings",
    ),
    "postings_without_completion": (
        "{n} transfer that is not completed has postings",
        "{n} transfers that are not completed have postings",
    ),
    "wrong_postings": (
        "{n} completed transfer does not have exactly the postings of its kind",
        "{n} completed transfers do not have exactly the postings of their kind",
    ),
    "postings_checksums": (
        "the journal's postings do not add up to the transfers',"
        " though no single movement was found wrong",
        "the journal's postings do not add up to the transfers',"
        " though no single movement was found wrong",
    ),
    "fees_not_following_the_rule": (
        "{n} transfer's fee does not follow the fee rule",
        "{n} transfers' fees do not follow the fee rule",
    ),
    "conversions_not_following_the_rule": (
        "{n} cross-currency transfer's converted amount is not amount × fx_rate rounded down",
        "{n} cross-currency transfers' converted amounts are not amount × fx_rate rounded down",
    ),
    "reversals_not_matching_originals": (
        "{n} reversal does not give back a completed transfer (receiver to sender, same currency)",
        "{n} reversals do not give back a completed transfer (receiver to sender, same currency)",
    ),
    "reversal_totals_not_matching": (
        "{n} transfer's reversed amount or fee does not match its completed reversals",
        "{n} transfers' reversed amounts or fees do not match their completed reversals",
    ),
    "fee_refunds_not_following_the_rule": (
        "{n} reversed transfer's fee refunds do not follow the refund rule",
        "{n} reversed transfers' fee refunds do not follow the refund rule",
    ),
    "running_totals_not_matching": (
        "{n} balance's running total of a day (limit usage, fee-tier volume) does not match "
        "its completed transfers",
        "{n} balances' running totals of a day (limit usage, fee-tier volume) do not match "
        "their completed transfers",
    ),
    "duplicate_idempotency_keys": (
        "{n} Idempotency-Key names more than one transfer",
        "{n} Idempotency-Keys name more than one transfer",
    ),
}


@dataclass(frozen=True, slots=True)
class AuditReport:
    checked_at: datetime
    transfers: int
    entries: int
    pending_transfers: int  # not a problem: pending transfers are still on their way
    violations: dict[str, int]  # a count per rule, zero where it holds
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def result(self) -> dict[str, Any]:
        """The report as `GET /v1/audit` answers it and `mini-ledger audit` prints it."""
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "transfers": self.transfers,
            "entries": self.entries,
            "pending": self.pending_transfers,
            "problems": self.problems,
        }


def _conservation_problem(currency: str, totals: CurrencyTotals) -> str:
    return (
        f"{currency} is not conserved: merchant balances + fee accounts"
        f" {format_amount(totals.held)}, issuance account {format_amount(negate(totals.issued))},"
        f" initial amounts + deposits − withdrawals {format_amount(totals.net)}"
    )


def report(check: LedgerCheck, checked_at: datetime) -> AuditReport:
    """The check as an operator reads it: one sentence per broken rule, conservation by
    currency with its totals."""
    problems = []
    for rule, forms in PROBLEMS.items():
        count = check.violations.get(rule, 0)
        if forms is None:
            problems += [
                _conservation_problem(currency, totals)
                for currency, totals in check.currencies.items()
                if not totals.conserved
            ]
        elif count:
            problems.append(forms[count > 1].format(n=count))
    return AuditReport(
        checked_at=checked_at,
        transfers=check.transfers,
        entries=check.entries,
        pending_transfers=check.pending_transfers,
        violations=check.violations,
        problems=problems,
    )


def audit_connection(connection: Connection) -> AuditReport:
    """The audit on a connection the caller holds (in the transaction it chose)."""
    checked_at = datetime.now(UTC)
    return report(check_ledger(connection), checked_at)


def audit_ledger(db: SyncDatabase, redis: Redis | None = None) -> AuditReport:
    """Read every invariant in one REPEATABLE READ snapshot, so the checks agree. With `redis`,
    the outcome is remembered for `/metrics` (`mini-ledger audit`)."""
    connect = db.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connect as connection, connection.begin():
        report = audit_connection(connection)
    if redis is not None:
        record_audit(redis, report.ok, len(report.problems), report.checked_at, report.result())
    return report


async def audit(db: Database, actor: Actor, redis: AsyncRedis) -> AuditReport:
    """`GET /v1/audit` (admin): the same check, from the API's connection pool; the outcome is
    remembered for `/metrics`."""
    actor.require_admin()
    try:
        async with db.engine.connect() as connection:
            await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                report = await connection.run_sync(audit_connection)
    except UNAVAILABLE_ERRORS as error:
        raise DependencyUnavailable("Database is unavailable, try again later") from error
    await record_audit_async(
        redis, report.ok, len(report.problems), report.checked_at, report.result()
    )
    return report
