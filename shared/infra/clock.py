"""The one clock the ledger's periods are read from (UTC).

Limits count per UTC day and month and fee tiers per UTC month: the worker stamps a group's
`processed` time and picks its period from one reading, and the API picks a transfer's volume
month from one. Tests replace `utc_now` to cross a period boundary without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
