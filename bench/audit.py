"""`make bench-audit`: how long `mini-ledger audit` takes on a ledger of 1,000,000 transfers.

    python bench/audit.py [--transfers 1000000] [--runs 3] [--reuse] [--keep]

Builds the ledger directly in a fresh database (`mini_ledger_bench_audit`; the configured
PostgreSQL if POSTGRES_HOST is set, else an embedded one in .mini-ledger/bench-audit; dropped at
the end unless --keep, used again by --reuse): migrations first, then merchants,
balances with initial amounts, and `--transfers` movements written with INSERT ... SELECT
generate_series — mostly completed `transfer`s with fees on the sharded fee accounts, plus
deposits, withdrawals, reversals (full, partial, and in two parts), failed and pending
transfers — with the journal entries, balances and versions the workers would have written.
Then it runs `mini-ledger audit` as a subprocess `--runs` times, requires every run to find the
ledger clean, and writes the best and median time to bench/results/audit.{json,md}.

SPEC: the audit of 1,000,000 transfers finishes within 10 s on the development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, Engine, create_engine, text  # noqa: E402

from cli.embedded import EmbeddedServers  # noqa: E402
from shared.db.audit import EXPECTED_RUNNING_TOTALS  # noqa: E402
from shared.db.migrate import migrate  # noqa: E402
from shared.infra.config import Settings, load_settings  # noqa: E402

BENCH_DATABASE = "mini_ledger_bench_audit"
EMBEDDED_HOME = ROOT / ".mini-ledger" / "bench-audit"
RESULTS = ROOT / "bench" / "results"
TARGET_S = 10.0
CURRENCIES = ("USD", "EUR")
# Every merchant holds this much of each currency from the start: no transfer fails for funds.
INITIAL_AMOUNT = 1_000_000_000
FEE_SHARDS = 16

# Movement `s` (1..N) is, by s % 50: 1 a deposit, 2 a withdrawal, 3 a reversal of movement
# s - 25, and 4 (every third block) the second reversal of that same transfer; the rest are
# transfers, of which s % 200 = 7 failed and s % 1000 = 9 is still pending. A reversed
# transfer (s % 50 = 28) is never failed or pending. By (s / 50) % 3, the reversal is the
# whole transfer (0), half of it (1), or half and then the remainder (2).
_MOVES = """
CREATE TEMP TABLE bench_moves AS
SELECT s, gen_random_uuid() AS id,
       CASE WHEN s % 50 = 1 THEN 'deposit'
            WHEN s % 50 = 2 THEN 'withdrawal'
            WHEN s > 50 AND s % 50 = 3 THEN 'reversal'
            WHEN s > 50 AND s % 50 = 4 AND (s / 50) % 3 = 2 THEN 'reversal'
            ELSE 'transfer' END AS kind,
       sender, (sender + 1 + (s * 104729) % ({merchants} - 1)) % {merchants} AS receiver,
       CASE WHEN s % 3 = 0 THEN 'EUR' ELSE 'USD' END AS currency,
       ((s * 7907) % 99999999901 + 100) * 0.00000001 AS amount,
       CASE WHEN s % 200 = 7 THEN 'failed' WHEN s % 1000 = 9 THEN 'pending'
            ELSE 'completed' END AS state
FROM generate_series(1::bigint, {transfers}) AS s,
     LATERAL (SELECT (s * 7919) % {merchants}) AS m (sender)
"""

# The fields of every kind, in the shape the transfers table holds them.
_MOVEMENTS = """
CREATE TEMP TABLE bench_movements AS
WITH plain AS (
    SELECT m.s, m.id, m.kind, m.currency, m.amount, m.state,
           CASE WHEN m.kind = 'deposit' THEN NULL ELSE m.sender END AS sender,
           CASE WHEN m.kind = 'withdrawal' THEN NULL ELSE m.receiver END AS receiver,
           CASE WHEN m.kind = 'transfer' THEN p.percent_fee ELSE 0 END AS percent_fee,
           CASE WHEN m.kind = 'transfer' THEN round(m.amount * p.percent_fee * 0.01, 8)
                ELSE 0 END AS fee,
           NULL::uuid AS reverses, NULL::bigint AS original_s
    FROM bench_moves m JOIN bench_merchants p ON p.m = m.sender
    WHERE m.kind <> 'reversal'
), halves AS (
    -- Half of the original, and its fee refund rounded half-up, in exact integer units.
    SELECT o.s, o.amount, o.fee, trunc(o.amount * 0.5, 8) AS amount_half,
           div(2 * (o.fee * 100000000) * (trunc(o.amount * 0.5, 8) * 100000000)
               + o.amount * 100000000, 2 * (o.amount * 100000000)) * 0.00000001 AS fee_half
    FROM plain o WHERE o.s % 50 = 28
)
SELECT * FROM plain
UNION ALL
SELECT r.s, r.id, 'reversal', o.currency, part.amount, 'completed', o.receiver, o.sender,
       o.percent_fee, part.fee, o.id, o.s
FROM bench_moves r
JOIN plain o ON o.s = r.s - CASE WHEN r.s % 50 = 3 THEN 25 ELSE 26 END
JOIN halves h ON h.s = o.s,
LATERAL (
    SELECT CASE WHEN r.s % 50 = 3 AND (r.s / 50) % 3 = 0 THEN o.amount
                WHEN r.s % 50 = 3 THEN h.amount_half
                ELSE o.amount - h.amount_half END AS amount,
           CASE WHEN r.s % 50 = 3 AND (r.s / 50) % 3 = 0 THEN o.fee
                WHEN r.s % 50 = 3 THEN h.fee_half
                ELSE o.fee - h.fee_half END AS fee
) part
WHERE r.kind = 'reversal'
"""

# Every posting, in the order the workers would have written them: the initial amounts first
# (a negative `seq`), then movement by movement.
_LEGS = """
CREATE TEMP TABLE bench_legs AS
WITH completed AS (
    SELECT v.*, sa.id AS sender_account, ra.id AS receiver_account, i.id AS issuance_account,
           f.id AS fee_account
    FROM bench_movements v
    LEFT JOIN bench_accounts sa ON sa.kind = 'merchant' AND sa.m = v.sender
                               AND sa.currency = v.currency
    LEFT JOIN bench_accounts ra ON ra.kind = 'merchant' AND ra.m = v.receiver
                               AND ra.currency = v.currency
    JOIN bench_accounts i ON i.kind = 'issuance' AND i.currency = v.currency
    JOIN bench_accounts f ON f.kind = 'fee' AND f.currency = v.currency
         AND f.shard = get_byte(uuid_send(coalesce(v.reverses, v.id)), 15) % 16
    WHERE v.state = 'completed'
)
SELECT s AS seq, id AS movement_id, id AS transfer_id, leg.account_id, leg.amount
FROM completed,
LATERAL (VALUES
    (sender_account, CASE kind WHEN 'transfer' THEN -(amount + fee) ELSE -amount END),
    (receiver_account, CASE kind WHEN 'reversal' THEN amount + fee ELSE amount END),
    (issuance_account, CASE kind WHEN 'deposit' THEN -amount WHEN 'withdrawal' THEN amount END),
    (fee_account, CASE WHEN fee = 0 THEN NULL WHEN kind = 'reversal' THEN -fee ELSE fee END)
) AS leg (account_id, amount)
WHERE leg.account_id IS NOT NULL AND leg.amount IS NOT NULL
UNION ALL
SELECT -row_number() OVER (ORDER BY a.m, a.currency), a.initial_movement, NULL,
       leg.account_id, leg.amount
FROM bench_accounts a
JOIN bench_accounts i ON i.kind = 'issuance' AND i.currency = a.currency,
LATERAL (VALUES (a.id, a.initial), (i.id, -a.initial)) AS leg (account_id, amount)
WHERE a.kind = 'merchant' AND a.initial > 0
"""

BUILD = [
    (
        "merchants",
        """
        CREATE TEMP TABLE bench_merchants AS
        SELECT m, gen_random_uuid() AS id, ((m % 5) * 0.75)::numeric(5, 2) AS percent_fee
        FROM generate_series(0, {merchants} - 1) AS m
        """,
    ),
    (
        "merchants",
        """
        INSERT INTO merchants (id, name, percent_fee, created, updated)
        SELECT id, 'audit-bench-' || m, percent_fee, {base}, {base} FROM bench_merchants
        """,
    ),
    (
        "accounts",
        # A balance per merchant and currency, with its initial amount; a JPY balance opened
        # empty (no entry) for every 50th merchant; 16 fee shards and one issuance account
        # per currency.
        f"""
        CREATE TEMP TABLE bench_accounts AS
        SELECT gen_random_uuid() AS id, 'merchant' AS kind, m, currency, NULL::int AS shard,
               {INITIAL_AMOUNT} + m * 0.00000001 AS initial,
               gen_random_uuid() AS initial_movement
        FROM bench_merchants, unnest(ARRAY{list(CURRENCIES)}) AS currency
        UNION ALL
        SELECT gen_random_uuid(), 'merchant', m, 'JPY', NULL, 0, NULL
        FROM bench_merchants WHERE m % 50 = 0
        UNION ALL
        SELECT gen_random_uuid(), 'fee', NULL, currency, shard, 0, NULL
        FROM unnest(ARRAY{list(CURRENCIES)}) AS currency,
             generate_series(0, {FEE_SHARDS - 1}) AS shard
        UNION ALL
        SELECT gen_random_uuid(), 'issuance', NULL, currency, NULL, 0, NULL
        FROM unnest(ARRAY{list(CURRENCIES)}) AS currency
        """,
    ),
    ("movements", _MOVES),
    ("movements", _MOVEMENTS),
    ("movements", "CREATE INDEX ON bench_accounts (kind, m, currency)"),
    ("movements", _LEGS),
    (
        "accounts",
        """
        INSERT INTO accounts (id, kind, merchant_id, currency, shard, amount, version, created)
        SELECT a.id, a.kind, p.id, a.currency, a.shard, coalesce(l.total, 0),
               coalesce(l.n, 0), {base}
        FROM bench_accounts a
        LEFT JOIN bench_merchants p ON p.m = a.m
        LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n
                   FROM bench_legs GROUP BY account_id) l ON l.account_id = a.id
        """,
    ),
    (
        "transfers",
        """
        INSERT INTO transfers (
            id, idempotency_scope, idempotency_key, request_fingerprint, kind,
            from_merchant_id, to_merchant_id, reverses, reversed_amount, reversed_fee,
            amount, fee, percent_fee, currency, state, failure_reason, created, processed,
            enqueued)
        SELECT v.id, NULL, 'audit-bench-' || v.s, md5(v.s::text), v.kind, sp.id, rp.id,
               v.reverses,
               CASE WHEN v.kind = 'transfer' THEN coalesce(r.amount, 0) END,
               CASE WHEN v.kind = 'transfer' THEN coalesce(r.fee, 0) END,
               v.amount, v.fee, v.percent_fee, v.currency, v.state,
               CASE WHEN v.state = 'failed' THEN 'Insufficient funds' END,
               {base} + v.s * interval '1 millisecond',
               CASE WHEN v.state <> 'pending'
                    THEN {base} + v.s * interval '1 millisecond' + interval '5 milliseconds'
               END,
               {base} + v.s * interval '1 millisecond'
        FROM bench_movements v
        LEFT JOIN bench_merchants sp ON sp.m = v.sender
        LEFT JOIN bench_merchants rp ON rp.m = v.receiver
        LEFT JOIN (SELECT reverses, sum(amount) AS amount, sum(fee) AS fee
                   FROM bench_movements WHERE reverses IS NOT NULL GROUP BY reverses) r
            ON r.reverses = v.id
        ORDER BY v.s
        """,
    ),
    (
        # What the workers add to the senders' running totals per UTC day.
        "running totals",
        "INSERT INTO balance_totals (merchant_id, currency, day, debited, sent)"
        + EXPECTED_RUNNING_TOTALS,
    ),
    (
        "entries",
        """
        INSERT INTO entries (
            movement_id, transfer_id, account_id, amount, balance_after, account_version,
            created)
        SELECT movement_id, transfer_id, account_id, amount,
               balance_after, version, {base} + seq * interval '1 millisecond'
        FROM (
            SELECT *, sum(amount) OVER w AS balance_after, row_number() OVER w AS version
            FROM bench_legs WINDOW w AS (PARTITION BY account_id ORDER BY seq)
        ) journal
        ORDER BY seq
        """,
    ),
]


def build(connection: Connection, transfers: int) -> dict[str, float]:
    """Write the ledger in one transaction; the seconds each step took.

    Foreign keys are not checked row by row while loading (session_replication_role =
    replica: every reference is to a row this same build wrote); the audit then reads
    everything else back.
    """
    merchants = max(10, min(10_000, transfers // 100))
    values = {"transfers": transfers, "merchants": merchants, "base": "now() - interval '30 days'"}
    connection.execute(text("SET LOCAL work_mem = '512MB'"))
    connection.execute(text("SET LOCAL session_replication_role = replica"))
    timings: dict[str, float] = {}
    for step, sql in BUILD:
        started = time.perf_counter()
        connection.execute(text(sql.format(**values)))
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - started
    return {step: round(seconds, 1) for step, seconds in timings.items()}


def fresh_database(settings: Settings) -> None:
    engine = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
    engine.dispose()
    migrate(settings)


def describe(engine: Engine) -> dict[str, Any]:
    """What the ledger holds, read back."""
    with engine.connect() as connection:
        kinds = connection.execute(
            text("SELECT kind, state, count(*) AS n FROM transfers GROUP BY 1, 2 ORDER BY 1, 2")
        ).all()
        sizes = connection.execute(
            text(
                "SELECT relname, pg_total_relation_size(oid) AS size FROM pg_class"
                " WHERE relname IN ('transfers', 'entries', 'accounts')"
            )
        ).all()
        counts = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM entries) AS entries,"
                " (SELECT count(*) FROM accounts) AS accounts,"
                " (SELECT count(*) FROM merchants) AS merchants, version() AS server"
            )
        ).one()
    return {
        "transfers": {f"{row.kind} {row.state}": row.n for row in kinds},
        "entries": counts.entries,
        "accounts": counts.accounts,
        "merchants": counts.merchants,
        "table_mb": {row.relname: round(row.size / 2**20) for row in sizes},
        "server": counts.server.split(" on ")[0],
    }


def run_audit() -> tuple[float, dict[str, Any]]:
    """`mini-ledger audit` as an operator runs it: a new process, wall-clock time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "audit"], cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"mini-ledger audit failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return elapsed, result


def markdown(report: dict[str, Any]) -> str:
    audit = report["audit"]
    ledger = report["ledger"]
    kinds = ", ".join(f"{name}: {n:,}" for name, n in ledger["transfers"].items())
    return (
        f"`mini-ledger audit` on a ledger of **{report['settings']['transfers']:,} transfers**"
        f" ({ledger['entries']:,} entries, {ledger['accounts']:,} accounts,"
        f" {ledger['merchants']:,} merchants; {kinds}) — run {report['started']} on"
        f" {report['machine']['cpus']} CPUs, {ledger['server']}"
        f" ({'embedded' if report['machine']['embedded_postgres'] else 'configured'}),"
        f" commit `{report['commit']}`.\n\n"
        "| audit runs | best | median | target | clean |\n|---|---|---|---|---|\n"
        f"| {', '.join(f'{s:.2f} s' for s in audit['runs_s'])} | **{audit['best_s']:.2f} s**"
        f" | {audit['median_s']:.2f} s | ≤ {TARGET_S:.0f} s | {'yes' if audit['clean'] else 'NO'}"
        f" |\n\nBuilt in {report['build']['total_s']:.0f} s (INSERT ... SELECT generate_series:"
        f" {', '.join(f'{k} {v} s' for k, v in report['build']['steps_s'].items())};"
        f" VACUUM ANALYZE {report['build']['vacuum_s']} s).\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="audit runs (best and median)")
    parser.add_argument("--reuse", action="store_true", help=f"keep an existing {BENCH_DATABASE}")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    started = datetime.now(UTC)
    # Embedded servers keep their data here (removed at the end unless --keep; `make clean`
    # removes it too), so that `--keep` then `--reuse` work without a configured server.
    home = EMBEDDED_HOME
    home.mkdir(parents=True, exist_ok=True)
    servers = EmbeddedServers(home)
    embedded = not os.environ.get("POSTGRES_HOST")
    try:
        os.environ.update(servers.start(dict(os.environ)))
        # Its own database, and its own Redis database for the audit's outcome.
        os.environ.update({"POSTGRES_DB": BENCH_DATABASE, "REDIS_DB": "14", "LOG_LEVEL": "WARNING"})
        settings = load_settings()
        engine = create_engine(settings.database_url)
        build_report = {"steps_s": {}, "vacuum_s": 0.0, "total_s": 0.0}
        if not (args.reuse and _has_ledger(settings, args.transfers)):
            print(f"== building a ledger of {args.transfers:,} transfers", flush=True)
            began = time.perf_counter()
            fresh_database(settings)
            with engine.begin() as connection:
                build_report["steps_s"] = build(connection, args.transfers)
            vacuum_began = time.perf_counter()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE"))
            build_report["vacuum_s"] = round(time.perf_counter() - vacuum_began, 1)
            build_report["total_s"] = round(time.perf_counter() - began, 1)
            print(f"   built in {build_report['total_s']} s", flush=True)
        ledger = describe(engine)
        engine.dispose()
        runs = []
        for run in range(args.runs):
            elapsed, result = run_audit()
            print(f"== audit {run + 1}: {elapsed:.2f} s, ok={result['ok']}", flush=True)
            if not result["ok"] or result["transfers"] != args.transfers:
                print(json.dumps(result, indent=2), file=sys.stderr)
                raise SystemExit("the audit did not find the ledger it was given clean")
            runs.append(round(elapsed, 2))
        if not args.keep:
            fresh_engine = create_engine(
                settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT"
            )
            with fresh_engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{BENCH_DATABASE}" WITH (FORCE)'))
            fresh_engine.dispose()
    finally:
        servers.stop()
        if embedded and not args.keep:  # its WAL alone is a gigabyte
            shutil.rmtree(home, ignore_errors=True)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "started": started.isoformat().replace("+00:00", "Z"),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "embedded_postgres": embedded,
        },
        "settings": {"transfers": args.transfers, "runs": args.runs},
        "ledger": ledger,
        "build": build_report,
        "audit": {
            "runs_s": runs,
            "best_s": min(runs),
            "median_s": statistics.median(runs),
            "target_s": TARGET_S,
            "clean": True,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "audit.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def _has_ledger(settings: Settings, transfers: int) -> bool:
    """Whether the bench database already holds a ledger of exactly that many transfers."""
    engine = create_engine(settings.database_url_for("postgres"))
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": BENCH_DATABASE}
            ).first()
    finally:
        engine.dispose()
    if exists is None:
        return False
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            held = connection.execute(text("SELECT count(*) FROM transfers")).scalar_one()
    finally:
        engine.dispose()
    return bool(held == transfers)


if __name__ == "__main__":
    sys.exit(main())
