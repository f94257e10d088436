"""`make bench-webhooks`: a burst of transfers, one webhook endpoint, a receiver that always
answers 204: every event must arrive, none missing, none twice; how long delivery takes.

    python bench/webhooks.py [--transfers 10000] [--worker-concurrency 2]

Starts PostgreSQL and Redis (configured or embedded), the API, a worker and beat (bench/stack.py),
a receiver on 127.0.0.1 in this process (HTTP/1.1, keep-alive), one admin endpoint; submits the
transfers as batches of 1,000 all at once; waits for every transfer to be final and every event
to be received; checks the receiver's log against the transfers; writes
bench/results/webhooks.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench import stack as bench_stack  # noqa: E402
from bench.stack import Stack, seed  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BATCH = 1000
TIMEOUT_S = 900


class Receiver:
    """Records (arrival time, event id, transfer id) of every POST; answers 204."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []
        lock = threading.Lock()
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                event = json.loads(body)
                with lock:
                    arrivals.append((time.monotonic(), event["id"], event["data"]["id"]))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


async def burst(url: str, api_key: str, transfers: int) -> list[str]:
    """Submit `transfers` transfers as batches of BATCH, all at once; their ids."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client:

        async def batch(index: int, size: int) -> list[str]:
            items = [
                {
                    "idempotency_key": f"wh-{index}-{n}",
                    "from_merchant": "bench-m-0",
                    "to_merchant": "bench-m-1",
                    "amount": "0.01",
                    "currency": "USD",
                }
                for n in range(size)
            ]
            response = await client.post("/v1/batches", json={"transfers": items})
            response.raise_for_status()
            return [item["transfer"]["id"] for item in response.json()["result"]["items"]]

        sizes = [min(BATCH, transfers - start) for start in range(0, transfers, BATCH)]
        batches = await asyncio.gather(*(batch(i, size) for i, size in enumerate(sizes)))
    return [transfer_id for ids in batches for transfer_id in ids]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transfers", type=int, default=10_000)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()
    os.environ["WEBHOOK_ALLOW_PRIVATE"] = "true"
    # A database and Redis database of its own: `make bench` may run on the same servers.
    bench_stack.BENCH_DATABASE = "mini_ledger_bench_webhooks"
    bench_stack.BENCH_REDIS_DB = "13"
    stack = Stack(api_workers=2, worker_concurrency=args.worker_concurrency, worker_processes=1)
    receiver = Receiver()
    try:
        settings = stack.start()
        asyncio.run(seed(stack.url, stack.api_key, 2))
        created = httpx.post(
            f"{stack.url}/v1/webhook-endpoints",
            json={"url": receiver.url},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        created.raise_for_status()
        engine = create_engine(settings.database_url)
        print(f"== burst of {args.transfers} transfers, one endpoint", flush=True)
        started = time.monotonic()
        ids = asyncio.run(burst(stack.url, stack.api_key, args.transfers))
        submitted_s = time.monotonic() - started
        final_s = None
        deadline = started + TIMEOUT_S
        while True:
            now = time.monotonic()
            if final_s is None:
                with engine.connect() as connection:
                    pending = connection.execute(
                        text("SELECT count(*) FROM transfers WHERE state = 'pending'")
                    ).scalar_one()
                if pending == 0:
                    final_s = now - started
            if len({event for _, event, _ in receiver.arrivals}) >= len(ids):
                break
            if now > deadline:
                raise RuntimeError(f"only {len(receiver.arrivals)} events after {TIMEOUT_S} s")
            time.sleep(0.2)
        time.sleep(3)  # anything sent twice would have arrived by now
        report = _report(args, stack, receiver, ids, started, submitted_s, final_s, engine)
        engine.dispose()
    finally:
        receiver.stop()
        stack.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "webhooks.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "webhooks.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0 if report["missing"] == 0 and report["duplicates"] == 0 else 1


def _report(
    args: argparse.Namespace,
    stack: Stack,
    receiver: Receiver,
    ids: list[str],
    started: float,
    submitted_s: float,
    final_s: float | None,
    engine: Any,
) -> dict[str, Any]:
    arrivals = list(receiver.arrivals)
    by_transfer = Counter(transfer for _, _, transfer in arrivals)
    by_event = Counter(event for _, event, _ in arrivals)
    with engine.connect() as connection:
        delivered = connection.execute(
            text("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")
        ).scalar_one()
    first = min(at for at, _, _ in arrivals) - started
    last = max(at for at, _, _ in arrivals) - started
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "transfers": args.transfers,
            "worker_processes": 1,
            "worker_concurrency": args.worker_concurrency,
            "webhook_concurrency": int(os.environ.get("WEBHOOK_CONCURRENCY") or 32),
            "embedded_servers": stack.embedded,
        },
        "transfers": len(ids),
        "posts_received": len(arrivals),
        "events_received": len(by_event),
        "missing": len(set(ids) - set(by_transfer)),
        "duplicates": sum(n - 1 for n in by_event.values() if n > 1),
        "deliveries_delivered_in_db": delivered,
        "submitted_s": round(submitted_s, 2),
        "all_final_s": None if final_s is None else round(final_s, 2),
        "first_event_s": round(first, 2),
        "last_event_s": round(last, 2),
        "events_per_s": round(len(by_event) / max(last - first, 1e-9)),
    }


def _markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    return (
        f"# Webhooks: a burst of {report['transfers']:,} transfers, one endpoint\n\n"
        f"{report['when']}; {report['machine']['cpus']} CPUs; one worker process "
        f"(concurrency {s['worker_concurrency']}), WEBHOOK_CONCURRENCY={s['webhook_concurrency']}; "
        f"receiver on 127.0.0.1 answering 204.\n\n"
        "| | |\n|---|---|\n"
        f"| events received | {report['events_received']:,} "
        f"(POSTs: {report['posts_received']:,}) |\n"
        f"| missing / twice | {report['missing']} / {report['duplicates']} |\n"
        f"| burst submitted | {report['submitted_s']} s |\n"
        f"| every transfer final | {report['all_final_s']} s |\n"
        f"| first / last event received | {report['first_event_s']} s / "
        f"{report['last_event_s']} s |\n"
        f"| delivery rate (first to last) | {report['events_per_s']:,} events/s |\n\n"
        "Times from the start of the burst. `python bench/webhooks.py` (`make bench-webhooks`).\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
