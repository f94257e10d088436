"""`mini-ledger import`: interrupted mid-file, run again, every row accounted for exactly once."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.domain.money import compute_fee
from shared.infra.database import SyncDatabase
from tests.conftest import ADMIN_SECRET, ROOT
from tests.e2e.conftest import Cluster
from tests.helpers import assert_ledger_consistent, balance_of, count, funded_merchant, unique

pytestmark = pytest.mark.e2e

ROWS = 6000


def _recorded(db: SyncDatabase, prefix: str) -> int:
    sql = "SELECT count(*) FROM transfers WHERE idempotency_key LIKE :prefix"
    return count(db, sql, prefix=f"{prefix}%")


def _import(url: str, path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "import",
            str(path),
            "--url",
            url,
            "--api-key",
            ADMIN_SECRET,
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_interrupted_import_resumes_exactly_once(
    cluster: Cluster, sync_db: SyncDatabase, tmp_path: Path
) -> None:
    client = cluster.client(0)
    merchants = [await funded_merchant(client, "1000000", percent_fee="0.5") for _ in range(8)]
    prefix = unique("import")
    path = tmp_path / "transfers.csv"
    expected = {m["name"]: Decimal("1000000") for m in merchants}
    invalid = 0
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["idempotency_key", "from_merchant", "to_merchant", "amount", "currency"])
        for row in range(ROWS):
            sender, receiver = merchants[row % 8], merchants[(row * 3 + 1) % 8]
            if row % 500 == 7:
                invalid += 1  # an amount with too many decimals: refused, into the rejects
                amount = "1.000000001"
            else:
                amount = f"{1 + row % 97}.5"
                fee = compute_fee(Decimal(amount), Decimal("0.5"))
                expected[sender["name"]] -= Decimal(amount) + fee
                expected[receiver["name"]] += Decimal(amount)
            writer.writerow([f"{prefix}-{row}", sender["name"], receiver["name"], amount, "usd"])

    first = _import(cluster.urls[0], path, "--batch-size", "100")
    deadline = time.monotonic() + 60
    while _recorded(sync_db, prefix) == 0:
        assert time.monotonic() < deadline and first.poll() is None
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=30) == 130
    recorded_at_interrupt = _recorded(sync_db, prefix)
    assert 0 < recorded_at_interrupt < ROWS - invalid

    second = _import(cluster.urls[1], path, "--batch-size", "700", "--wait")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["rows"] == ROWS
    assert summary["accepted"] == ROWS - invalid and summary["refused"] == invalid
    # What the first run recorded comes back as replays, the rest is new; nothing twice.
    assert summary["replayed"] >= recorded_at_interrupt
    assert summary["new"] + summary["replayed"] == ROWS - invalid
    assert summary["failed"] == 0
    assert Path(summary["failures"]).read_text().splitlines() == [
        "line,idempotency_key,transfer_id,reason"
    ]
    assert summary["completed"] == ROWS - invalid and summary["pending"] == 0
    assert _recorded(sync_db, prefix) == ROWS - invalid
    rows = list(csv.DictReader(Path(summary["rejects"]).read_text().splitlines()))
    assert len(rows) == invalid
    assert {row["status"] for row in rows} == {"422"}
    # Each refused row keeps its line (the header is line 1) and its key.
    assert {(row["line"], row["idempotency_key"]) for row in rows} == {
        (str(n + 2), f"{prefix}-{n}") for n in range(ROWS) if n % 500 == 7
    }
    for merchant in merchants:
        assert await balance_of(client, merchant["name"]) == expected[merchant["name"]]
    assert_ledger_consistent(sync_db)


def _summary(process: subprocess.Popen[bytes]) -> tuple[dict[str, Any], str]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return summary, err.decode()


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


async def test_failures_file_and_malformed_rows_keep_key_and_line(
    cluster: Cluster, sync_db: SyncDatabase, tmp_path: Path
) -> None:
    client = cluster.client(0)
    rich = await funded_merchant(client, "1000")
    poor = await funded_merchant(client, "10")
    prefix = unique("failures")

    def item(n: int, sender: str, amount: str) -> str:
        body = {
            "idempotency_key": f"{prefix}-{n}",
            "from_merchant": sender,
            "to_merchant": rich["name"] if sender != rich["name"] else poor["name"],
            "amount": amount,
            "currency": "USD",
        }
        return json.dumps(body)

    lines = [
        item(0, rich["name"], "1"),  # line 1: completes
        item(1, poor["name"], "4"),  # line 2: completes (poor: 10 -> 6)
        item(2, poor["name"], "50"),  # line 3: fails in the worker, insufficient funds
        f'{{"idempotency_key": "{prefix}-3", "amount": ',  # line 4: bad JSON, key readable
        "",  # line 5: blank, skipped
        '["not", "an", "object"]',  # line 6: not an object
        json.dumps({"idempotency_key": f"{prefix}-4", "from_merchant": rich["name"]}),  # line 7
        item(5, poor["name"], "100"),  # line 8: fails (poor never holds more than 13)
        item(6, rich["name"], "2"),  # line 9: completes
    ]
    path = tmp_path / "transfers.jsonl"
    path.write_text("\n".join(lines) + "\n")

    summary, err = _summary(_import(cluster.urls[0], path, "--wait", "--batch-size", "3"))
    assert summary["rows"] == 8  # the blank line is not a row
    assert (summary["new"], summary["replayed"], summary["refused"]) == (5, 0, 3)
    assert (summary["completed"], summary["failed"], summary["pending"]) == (3, 2, 0)
    assert "rows 8/8 (100.0%)" in err and "settled 5/5 (100.0%)" in err

    rejects = _csv(Path(summary["rejects"]))
    assert [(r["line"], r["idempotency_key"], r["status"]) for r in rejects] == [
        ("4", f"{prefix}-3", "422"),
        ("6", "", "422"),
        ("7", f"{prefix}-4", "422"),
    ]
    assert rejects[0]["error"].startswith("Invalid JSON")
    assert summary["failures"] == f"{path}.failures.csv"
    failures = _csv(Path(summary["failures"]))
    assert [(f["line"], f["idempotency_key"]) for f in failures] == [
        ("3", f"{prefix}-2"),
        ("8", f"{prefix}-5"),
    ]
    assert all(f["reason"] == "Insufficient funds" and f["transfer_id"] for f in failures)
    assert await balance_of(client, poor["name"]) == Decimal(6) + Decimal(1) + Decimal(2)

    # The same command again (a different failures path): every row a replay, nothing repeats,
    # and the rows that failed the first time are listed again.
    again = tmp_path / "again.failures.csv"
    summary, _ = _summary(
        _import(cluster.urls[1], path, "--wait", "--batch-size", "4", "--failures", str(again))
    )
    assert (summary["new"], summary["replayed"], summary["refused"]) == (0, 5, 3)
    assert (summary["completed"], summary["failed"]) == (3, 2)
    assert _csv(again) == failures
    assert await balance_of(client, poor["name"]) == Decimal(9)
    assert _recorded(sync_db, prefix) == 5
    assert_ledger_consistent(sync_db)


async def test_a_csv_row_with_missing_columns_keeps_its_key_and_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    client = cluster.client(0)
    sender = await funded_merchant(client, "100")
    receiver = await funded_merchant(client, "0")
    prefix = unique("short")
    path = tmp_path / "transfers.csv"
    path.write_text(
        "idempotency_key,from_merchant,to_merchant,amount,currency\n"
        f"{prefix}-0,{sender['name']},{receiver['name']},1,USD\n"
        f"{prefix}-1,{sender['name']},{receiver['name']}\n"
        f"{prefix}-2,{sender['name']},{receiver['name']},,USD\n"
    )
    summary, _ = _summary(_import(cluster.urls[0], path, "--wait"))
    assert (summary["rows"], summary["new"], summary["refused"]) == (3, 1, 2)
    rejects = _csv(Path(summary["rejects"]))
    assert [(r["line"], r["idempotency_key"], r["status"]) for r in rejects] == [
        ("3", f"{prefix}-1", "422"),
        ("4", f"{prefix}-2", "422"),
    ]
    assert rejects[0]["error"] == "Wrong number of columns"


async def test_the_readme_importer_example_runs_end_to_end(
    cluster: Cluster, sync_db: SyncDatabase, tmp_path: Path
) -> None:
    """README, "Bulk import": make_import_file.py, then `mini-ledger import ... --wait`."""
    path = tmp_path / "transfers.csv"
    make = subprocess.run(
        [
            sys.executable,
            "examples/make_import_file.py",
            "--rows",
            "200",
            "--out",
            str(path),
            "--url",
            cluster.urls[0],
            "--api-key",
            ADMIN_SECRET,
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert make.returncode == 0, make.stderr.decode()
    assert b"wrote 200 rows" in make.stdout
    summary, err = _summary(_import(cluster.urls[0], path, "--wait"))
    assert summary["rows"] == 200 and summary["new"] == 200 and summary["replayed"] == 0
    assert summary["completed"] == 200 and summary["failed"] == summary["pending"] == 0
    assert summary["rejects"] == f"{path}.rejects.csv"
    assert summary["failures"] == f"{path}.failures.csv"
    # stderr is a pipe here: plain lines with total, percentage, rate and ETA.
    assert "rows 200/200 (100.0%)" in err and "ETA" in err and "/s" in err
    assert "settled 200/200 (100.0%)" in err
    assert_ledger_consistent(sync_db)
