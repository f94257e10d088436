"""Create funded merchants through the API and write an import file of transfers among them.

    python examples/make_import_file.py --rows 100000 --out transfers.csv [--url URL]

The admin key comes from --api-key, else $MINI_LEDGER_API_KEY, else zero-config's admin.key.

Then: mini-ledger import transfers.csv --wait
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import uuid
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=200)
    parser.add_argument("--out", default="transfers.csv")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--api-key", default=os.environ.get("MINI_LEDGER_API_KEY"))
    arguments = parser.parse_args()
    home = Path(os.environ.get("MINI_LEDGER_HOME") or ".mini-ledger")
    api_key = arguments.api_key or (home / "admin.key").read_text().strip()
    rng = random.Random(arguments.seed)
    run = uuid.uuid4().hex[:8]
    names = []
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=f"{arguments.url}/v1", timeout=30, headers=headers) as client:
        for index in range(arguments.merchants):
            name = f"import-{run}-{index}"
            merchant = client.post("/merchants", json={"name": name, "percent_fee": "0.5"})
            merchant.raise_for_status()
            balance = client.post(
                "/merchants/balance",
                json={
                    "merchant_id": merchant.json()["result"]["id"],
                    "currency": "USD",
                    "initial_amount": "1000000",
                },
            )
            balance.raise_for_status()
            names.append(name)
    with open(arguments.out, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["idempotency_key", "from_merchant", "to_merchant", "amount", "currency"])
        for row in range(arguments.rows):
            sender, receiver = rng.sample(names, 2)
            cents = rng.randint(1, 100_000)
            amount = f"{cents // 100}.{cents % 100:02d}"
            writer.writerow([f"import-{run}-{row}", sender, receiver, amount, "USD"])
    print(f"wrote {arguments.rows} rows among {len(names)} merchants to {arguments.out}")


if __name__ == "__main__":
    main()
