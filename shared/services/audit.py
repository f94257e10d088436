"""The ledger check as a use case: every invariant of SPEC.md, from the database."""

from __future__ import annotations

from dataclasses import dataclass

from shared.db.audit import audit_counts
from shared.infra.database import SyncDatabase


@dataclass(frozen=True, slots=True)
class AuditReport:
    violations: dict[str, int]
    pending_transfers: int

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())


def audit_ledger(db: SyncDatabase) -> AuditReport:
    """Read every invariant in one REPEATABLE READ snapshot, so the checks agree."""
    connect = db.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connect as connection, connection.begin():
        counts = audit_counts(connection)
    pending = counts.pop("pending_transfers")
    return AuditReport(violations=counts, pending_transfers=pending)
