"""The worker's database path alone: how long `apply_group` takes per group, statement by statement.

Writes pending transfers between 1,000 merchants straight into a database of its own
(`mini_ledger_bench_apply`, dropped first; never the configured one), then applies them in groups
of `--group-size` through `shared.services.posting.apply_group` — no API, no queue, no Redis —
and prints groups/s and the time each SQL statement took per group. Compare two commits by
running it from worktrees of each, alternately, in the same hour:

    python bench/apply.py --group-size 1 --groups 400
    python bench/apply.py --group-size 1000 --groups 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DATABASE = "mini_ledger_bench_apply"
os.environ["POSTGRES_DB"] = BENCH_DATABASE

from sqlalchemy import Engine, create_engine, event, text  # noqa: E402

from shared.db.migrate import migrate  # noqa: E402
from shared.infra.config import load_settings  # noqa: E402
from shared.infra.database import SyncDatabase  # noqa: E402
from shared.services.posting import apply_group  # noqa: E402

MERCHANTS = 1000


def fresh_database() -> Engine:
    settings = load_settings()
    admin = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    admin.dispose()
    migrate(settings)
    return create_engine(settings.database_url)


def seed(engine: Engine, group_size: int, groups: int) -> list[list[uuid.UUID]]:
    """Merchants with 1,000,000 USD each, and `groups` + 1 groups of pending transfers (the
    first warms up), each from one merchant to the next, 10 USD at 1 %."""
    merchants = [uuid.uuid4() for _ in range(MERCHANTS)]
    batches = [[uuid.uuid4() for _ in range(group_size)] for _ in range(groups + 1)]
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO merchants (id, name, percent_fee) SELECT id, 'bench-' || n, 1"
                " FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS m (id, n)"
            ),
            {"ids": merchants},
        )
        connection.execute(
            text(
                "INSERT INTO accounts (id, kind, merchant_id, currency, amount, version)"
                " SELECT gen_random_uuid(), 'merchant', id, 'USD', 1000000, 0"
                " FROM unnest(CAST(:ids AS uuid[])) AS m (id)"
            ),
            {"ids": merchants},
        )
        for number, batch in enumerate(batches):
            senders = [merchants[(number * 7 + k) % MERCHANTS] for k in range(len(batch))]
            receivers = [merchants[(number * 7 + k + 1) % MERCHANTS] for k in range(len(batch))]
            connection.execute(
                text(
                    """
                    INSERT INTO transfers (id, idempotency_key, request_fingerprint, kind,
                        from_merchant_id, to_merchant_id, amount, fee, percent_fee, currency,
                        state, enqueued)
                    SELECT id, 'bench-' || id, repeat('0', 64), 'transfer', sender, receiver,
                           10, 0.1, 1, 'USD', 'pending', 'infinity'
                    FROM unnest(CAST(:ids AS uuid[]), CAST(:senders AS uuid[]),
                                CAST(:receivers AS uuid[])) AS t (id, sender, receiver)
                    """
                ),
                {"ids": batch, "senders": senders, "receivers": receivers},
            )
    return batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=1)
    parser.add_argument("--groups", type=int, default=400)
    args = parser.parse_args()
    engine = fresh_database()
    batches = seed(engine, args.group_size, args.groups)
    db = SyncDatabase(engine)
    apply_group(db, batches[0])  # warm-up: connections, plans, caches
    statements: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    @event.listens_for(engine, "before_cursor_execute")
    def started(connection: Any, *_: Any) -> None:
        connection.info["started"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def finished(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        timing = statements[" ".join(statement.split())[:60]]
        timing[0] += 1
        timing[1] += time.perf_counter() - connection.info["started"]

    began = time.perf_counter()
    for batch in batches[1:]:
        apply_group(db, batch)
    elapsed = time.perf_counter() - began
    per_group_ms = elapsed / args.groups * 1000
    print(
        f"{args.groups} groups of {args.group_size}: {per_group_ms:.2f} ms per group, "
        f"{args.groups * args.group_size / elapsed:,.0f} transfers/s"
    )
    for statement, (count, seconds) in sorted(statements.items(), key=lambda kv: -kv[1][1]):
        print(f"  {seconds / args.groups * 1000:8.2f} ms/group  {int(count):6d}×  {statement}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
