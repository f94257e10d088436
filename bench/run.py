"""`make bench`: drive Mini Ledger with wrk, measure what settles, and compare with pgbench.

    python bench/run.py [--duration 15] [--connections 32] [--api-workers 2]
                        [--worker-processes 1] [--worker-concurrency 2] [--scenarios a,b,...]

Starts PostgreSQL and Redis (the configured ones if POSTGRES_HOST / REDIS_HOST are set, else
embedded), the API and the workers; seeds 1,000 merchants; runs each scenario for a fixed time
from a separate wrk process; reads back from the database what settled and how fast; checks the
ledger; runs pgbench on the same server with the same client count; writes
bench/results/<time>.json and .md, and latest.json / latest.md.

`ceiling` (first, on the same servers) drives `bench/ceiling_app.py` — a bare FastAPI app doing
only what a submission must: parse, one insert with a unique key, one enqueue — with the same
process count, load generator, requests and connections as `uniform`; every write scenario's
accepted/s is reported as a ratio of its requests/s, beside the pgbench ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.measure import (  # noqa: E402
    IN_FLIGHT_GRACE_S,
    QueueSampler,
    run_pgbench,
    scenario_stats,
    wait_settled,
)
from bench.stack import CeilingServer, Stack, seed  # noqa: E402
from shared.infra.database import SyncDatabase  # noqa: E402
from shared.services.audit import audit_ledger  # noqa: E402

# `read` runs before `bulk`, so it does not measure autovacuum digesting the bulk rows; `ceiling`
# runs first, on an idle database with nothing queued.
SCENARIOS = ["ceiling", "uniform", "hot-sender", "hot-pair", "retry", "read", "bulk"]
WRITE_SCENARIOS = [s for s in SCENARIOS if s not in ("read", "ceiling")]
MERCHANTS = 1000
BULK_BATCH = 1000
DRAIN_TIMEOUT_S = 180
RESULTS = ROOT / "bench" / "results"
# Issue #13's targets, per scenario: (what, measured value, bound, is the bound a minimum).
Target = tuple[str, float | None, float, bool]


def targets_of(result: dict[str, Any], pgbench_tps: float) -> list[Target]:
    """The conditions a scenario's result must meet (all of them), with what it measured."""
    scenario = result["scenario"]
    if scenario == "uniform":
        return [
            ("settled/s ≥ 0.25 × pgbench", result.get("ratio_to_pgbench"), 0.25, True),
            ("accepted/s ≥ 0.5 × ceiling", result.get("ratio_to_ceiling"), 0.5, True),
            ("p99 ≤ 100 ms", result["p99_ms"], 100.0, False),
        ]
    if scenario == "hot-sender":
        # The seeded sender could pay for hours of this: any failure is not a genuine one.
        return [
            ("settled/s ≥ 0.25 × pgbench", result.get("ratio_to_pgbench"), 0.25, True),
            ("failed = 0", result["states"].get("failed", 0), 0.0, False),
        ]
    if scenario == "bulk":
        return [("settled/s ≥ 3 × pgbench", result.get("ratio_to_pgbench"), 3.0, True)]
    if scenario == "read":
        ratio = result["reads_per_s"] / pgbench_tps if pgbench_tps else None
        return [("requests/s ≥ 0.5 × pgbench", ratio, 0.5, True)]
    return []


def verdict(targets: list[Target]) -> str:
    """`met`, or each condition missed with what was measured."""
    missed = [
        f"{what} ({value:.2f})" if isinstance(value, float) else f"{what} ({value})"
        for what, value, bound, at_least in targets
        if value is None or (value < bound if at_least else value > bound)
    ]
    return "met" if not missed else "missed: " + "; ".join(missed)


def run_wrk(
    url: str,
    api_key: str,
    scenario: str,
    prefix: str,
    args: argparse.Namespace,
    ids_file: Path,
) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_SCENARIO": scenario,
        "BENCH_MERCHANTS": str(MERCHANTS),
        "BENCH_PREFIX": prefix,
        "BENCH_BATCH": str(BULK_BATCH),
        "BENCH_IDS": str(ids_file),
        "BENCH_API_KEY": api_key,
    }
    connections = 2 if scenario == "bulk" else args.connections
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{args.duration}s",
            "--timeout",
            "30s",
            "-s",
            str(ROOT / "bench" / "transfers.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed for {scenario}:\n{result.stdout}\n{result.stderr}")
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON "))
    report: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The load generator's own CPU, as a share of one core: far below 100% means it kept up.
    report["load_generator_cpu_pct"] = round(100 * cpu_s / elapsed, 1)
    report["connections"] = connections
    return report


def run_scenario(
    stack: Stack,
    engine: Any,
    settings: Any,
    scenario: str,
    args: argparse.Namespace,
    run_id: str,
    ids_file: Path,
) -> dict[str, Any]:
    prefix = f"{run_id}-{scenario}"
    print(f"== {scenario}: {args.duration}s", flush=True)
    with QueueSampler(settings) as sampler:
        wrk = run_wrk(stack.url, stack.api_key, scenario, prefix, args, ids_file)
        left_pending = wait_settled(engine, DRAIN_TIMEOUT_S)
    duration_s = wrk["duration_us"] / 1e6
    statuses = {str(k): v for k, v in sorted(wrk["statuses"].items())}
    result: dict[str, Any] = {
        "scenario": scenario,
        "duration_s": round(duration_s, 2),
        "connections": wrk["connections"],
        "requests": wrk["requests"],
        "requests_per_s": round(wrk["requests"] / duration_s, 1),
        "request_p50_ms": wrk["latency_us"]["p50"] / 1000,
        "request_p99_ms": wrk["latency_us"]["p99"] / 1000,
        "status_counts": statuses,
        "socket_errors": wrk["errors"],
        "load_generator_cpu_pct": wrk["load_generator_cpu_pct"],
        "queue_depth": sampler.samples,
    }
    if scenario == "read":
        result.update(
            p50_ms=result["request_p50_ms"],
            p95_ms=wrk["latency_us"]["p95"] / 1000,
            p99_ms=result["request_p99_ms"],
            accepted_per_s=0.0,
            settled_per_s=0.0,
            states={},
            reads_per_s=result["requests_per_s"],
        )
    else:
        stats = scenario_stats(engine, prefix)
        settled = stats["states"]["completed"] + stats["states"]["failed"]
        accepted = stats["transfers"]
        result.update(stats)
        result["accepted_per_s"] = round(accepted / duration_s, 1)
        # Settled per second over the whole window, from the first submission to the last
        # final state: a backlog that drains after the load stops counts against it.
        result["settled_per_s"] = round(settled / max(stats["settle_window_s"], duration_s), 1)
        result["left_pending"] = left_pending
        if scenario == "retry":
            result["replays_sent"] = wrk["replays"]
            result["replays_never_wrote"] = accepted <= wrk["new_keys"]
    report = audit_ledger(SyncDatabase(engine))
    result["audit_ok"] = report.ok and report.pending_transfers == 0
    result["audit"] = report.violations
    return result


def run_ceiling(
    stack: Stack, engine: Any, settings: Any, args: argparse.Namespace, run_id: str, ids_file: Path
) -> dict[str, Any]:
    """The bare app under `uniform`'s load: its 2xx answers per second are the ceiling."""
    prefix = f"{run_id}-ceiling"
    print(f"== ceiling: {args.duration}s", flush=True)
    with CeilingServer(stack, settings) as ceiling:
        wrk = run_wrk(ceiling.url, stack.api_key, "ceiling", prefix, args, ids_file)
        time.sleep(IN_FLIGHT_GRACE_S)  # requests in flight when wrk stopped
        recorded = ceiling.recorded()
    duration_s = wrk["duration_us"] / 1e6
    statuses = {str(k): v for k, v in sorted(wrk["statuses"].items())}
    answered = sum(v for k, v in statuses.items() if k.startswith("2"))
    result: dict[str, Any] = {
        "scenario": "ceiling",
        "app": "bench/ceiling_app.py",
        "duration_s": round(duration_s, 2),
        "connections": wrk["connections"],
        "requests": wrk["requests"],
        "requests_per_s": round(wrk["requests"] / duration_s, 1),
        # The ceiling: durable answers (2xx) per second.
        "ceiling_rps": round(answered / duration_s, 1),
        "p50_ms": wrk["latency_us"]["p50"] / 1000,
        "p95_ms": wrk["latency_us"]["p95"] / 1000,
        "p99_ms": wrk["latency_us"]["p99"] / 1000,
        "status_counts": statuses,
        "socket_errors": wrk["errors"],
        "load_generator_cpu_pct": wrk["load_generator_cpu_pct"],
        "rows_inserted": recorded["rows"],
        "entries_enqueued": recorded["enqueued"],
        "synchronous_commit": recorded["synchronous_commit"],
        "fsync": recorded["fsync"],
        "accepted_per_s": round(answered / duration_s, 1),
        "settled_per_s": 0.0,
        "states": {},
    }
    report = audit_ledger(SyncDatabase(engine))
    result["audit_ok"] = report.ok and report.pending_transfers == 0
    result["audit"] = report.violations
    return result


def sample_ids(engine: Any, path: Path) -> None:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id FROM transfers ORDER BY random() LIMIT 5000"))
        path.write_text("".join(f"{row.id}\n" for row in rows))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Run {report['started']} on {report['machine']['cpus']} CPUs, commit "
        f"`{report['commit']}`; {report['settings']['api_workers']} API processes, "
        f"{report['settings']['worker_processes']}×{report['settings']['worker_concurrency']} "
        f"workers, {report['settings']['connections']} connections, "
        f"{report['settings']['duration_s']} s per scenario; pgbench TPC-B "
        f"(-M prepared, same server, same clients): **{report['pgbench']['tps']:,.0f} tps**.",
    ]
    ceiling = report.get("ceiling")
    if ceiling:
        lines[0] += (
            f" Ceiling (`bench/ceiling_app.py`: FastAPI, parse, one insert with a unique key, one "
            f"LPUSH; {report['settings']['api_workers']} processes, `uniform`'s requests): "
            f"**{ceiling['requests_per_s']:,.0f} requests/s**."
        )
    lines += [
        "",
        "| scenario | accepted/s | settled/s | × pgbench | × ceiling | issue #13 targets "
        "| p50 ms | p95 ms | p99 ms | statuses | states | audit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for s in report["scenarios"]:
        target_text = s.get("target", "")
        if s["scenario"] == "ceiling":
            lines.append(
                f"| ceiling | {s['ceiling_rps']:,.0f} |  |  | 1.00 |  | "
                f"{s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | "
                f"{', '.join(f'{k}: {v}' for k, v in s['status_counts'].items())} | "
                f"rows: {s['rows_inserted']}, enqueued: {s['entries_enqueued']} | "
                f"{'ok' if s['audit_ok'] else 'FAILED'} |"
            )
            continue
        lines.append(
            f"| {s['scenario']} | {s['accepted_per_s']:,.0f} | {s['settled_per_s']:,.0f} | "
            f"{ratio(s.get('ratio_to_pgbench'))} | {ratio(s.get('ratio_to_ceiling'))} | "
            f"{target_text} | "
            f"{s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | "
            f"{', '.join(f'{k}: {v}' for k, v in s['status_counts'].items())} | "
            f"{', '.join(f'{k}: {v}' for k, v in s['states'].items() if v)} | "
            f"{'ok' if s['audit_ok'] else 'FAILED'} |"
        )
    read = next((s for s in report["scenarios"] if s["scenario"] == "read"), None)
    if read:
        lines += [
            "",
            f"`read`: {read['reads_per_s']:,.0f} requests/s (p50 {read['p50_ms']} ms, "
            f"p99 {read['p99_ms']} ms). Latencies of write scenarios are submit-to-final "
            "(database timestamps); of `read`, request latency.",
        ]
    lines += [
        "",
        "× pgbench: settled/s ÷ pgbench tps. × ceiling: accepted/s ÷ the ceiling's 2xx "
        "answers/s" + (f" ({ceiling['requests_per_s']:,.0f})" if ceiling else " (not run)") + "; "
        "the `ceiling` row's latencies are request latencies.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-processes", type=int, default=1)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--pgbench-duration", type=int, default=15)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    run_id = f"bench{uuid.uuid4().hex[:6]}"
    started = datetime.now(UTC)
    stack = Stack(args.api_workers, args.worker_concurrency, args.worker_processes)
    try:
        settings = stack.start()
        engine = create_engine(settings.database_url, pool_size=2)
        print(f"== seeding {MERCHANTS} merchants", flush=True)
        asyncio.run(seed(stack.url, stack.api_key, MERCHANTS))
        ids_file = stack.home / "transfer-ids.txt"
        results = []
        for scenario in scenarios:
            if scenario == "ceiling":
                results.append(run_ceiling(stack, engine, settings, args, run_id, ids_file))
                continue
            if scenario == "read":
                sample_ids(engine, ids_file)
            results.append(run_scenario(stack, engine, settings, scenario, args, run_id, ids_file))
        print("== pgbench", flush=True)
        pgbench = run_pgbench(settings, args.connections, args.pgbench_duration)
        engine.dispose()
    finally:
        stack.stop()
    ceiling = next((r for r in results if r["scenario"] == "ceiling"), None)
    for result in results:
        if result["scenario"] in WRITE_SCENARIOS:
            result["ratio_to_pgbench"] = round(result["settled_per_s"] / pgbench["tps"], 3)
            if ceiling and ceiling["ceiling_rps"]:
                result["ratio_to_ceiling"] = round(
                    result["accepted_per_s"] / ceiling["ceiling_rps"], 3
                )
        if targets := targets_of(result, pgbench["tps"]):
            result["target"] = verdict(targets)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "started": started.isoformat().replace("+00:00", "Z"),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "embedded_servers": stack.embedded,
        },
        "settings": {
            "duration_s": args.duration,
            "connections": args.connections,
            "api_workers": args.api_workers,
            "worker_processes": args.worker_processes,
            "worker_concurrency": args.worker_concurrency,
            "merchants": MERCHANTS,
            "bulk_batch": BULK_BATCH,
        },
        "pgbench": pgbench,
        "ceiling": None
        if ceiling is None
        else {
            "requests_per_s": ceiling["ceiling_rps"],
            "app": ceiling["app"],
            "processes": args.api_workers,
            "connections": ceiling["connections"],
            "ratio_to_pgbench": round(ceiling["ceiling_rps"] / pgbench["tps"], 3),
        },
        "scenarios": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    table = markdown(report)
    for name in (stamp, "latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(table)
    print(table)
    return 0 if all(r["audit_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
