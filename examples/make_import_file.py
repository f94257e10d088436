"""Create funded merchants through the API and write an import file of transfers among them.

    python examples/make_import_file.py --rows 100000 --out transfers.csv [--url URL]

Then: mini-ledger import transfers.csv --wait
"""

from __future__ import annotations

import argparse
import csv
import random
import uuid

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=200)
    parser.add_argument("--out", default="transfers.csv")
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    run = uuid.uuid4().hex[:8]
    names = []
    with httpx.Client(base_url=arguments.url, timeout=30) as client:
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
            amount = f"{rng.randint(1, 100_000) / 100:.2f}"
            writer.writerow([f"import-{run}-{row}", sender, receiver, amount, "USD"])
    print(f"wrote {arguments.rows} rows among {len(names)} merchants to {arguments.out}")


if __name__ == "__main__":
    main()
