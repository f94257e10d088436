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
    assert summary["completed"] == ROWS - invalid and summary["pending"] == 0
    assert _recorded(sync_db, prefix) == ROWS - invalid
    rows = list(csv.DictReader(Path(summary["rejects"]).read_text().splitlines()))
    assert len(rows) == invalid
    assert {row["status"] for row in rows} == {"422"}
    for merchant in merchants:
        assert await balance_of(client, merchant["name"]) == expected[merchant["name"]]
    assert_ledger_consistent(sync_db)
