"""`mini-ledger`: run everything (zero-config), or one process, migrate, audit."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared.config import get_settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _celery(*arguments: str) -> int:
    """Replace this process with Celery, so signals reach it directly."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", *arguments]
    os.execv(sys.executable, argv)


def cmd_run(_: argparse.Namespace) -> int:
    """Embedded servers for what the environment leaves unset, migrations, then the Procfile's
    processes, every one of them supervised (`shared.supervisor`) until Ctrl-C or SIGTERM."""
    from shared.db.migrate import migrate
    from shared.embedded import EmbeddedServers, default_home
    from shared.logging import configure_logging
    from shared.supervisor import Command, RestartPolicy, Supervisor, read_procfile

    configure_logging(load_settings())
    home = default_home()
    supervisor = Supervisor(
        RestartPolicy(first_delay_s=float(os.environ.get("RESTART_DELAY_S") or "1"))
    )
    # Only a flag: the stop runs from the main loop, processes first, servers last.
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    servers = EmbeddedServers(home)
    environment = dict(os.environ)
    environment |= servers.start(environment)
    supervisor.adopt(servers.started())
    try:
        # Children find `mini-ledger` and this interpreter first on PATH.
        bin_dir = str(Path(sys.executable).parent)
        environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
        environment["MINI_LEDGER_HOME"] = str(home)
        environment.setdefault("PYTHONUNBUFFERED", "1")
        os.environ.update(environment)
        get_settings.cache_clear()
        migrate(load_settings())
        if supervisor.stop_requested:
            return 0
        host = environment.get("HOST", "127.0.0.1")
        api_port = environment.get("PORT", "8000")
        flower_port = environment.get("FLOWER_PORT", "5555")
        sys.stderr.write(
            f"Mini Ledger: API http://{host}:{api_port} (Swagger UI at /docs),"
            f" Flower http://{host}:{flower_port}, data in {home}. Ctrl-C stops everything.\n"
        )
        procfile = read_procfile(PROJECT_ROOT / "Procfile")
        supervisor.start(
            [Command(name, line, environment, PROJECT_ROOT) for name, line in procfile.items()]
        )
        return supervisor.watch()
    finally:
        supervisor.stop()


def cmd_migrate(_: argparse.Namespace) -> int:
    from shared.db.migrate import migrate

    migrate(load_settings())
    return 0


def cmd_api(arguments: argparse.Namespace) -> int:
    import resource

    import uvicorn

    # Every connection is a file descriptor. At the usual soft limit (1024) a burst of
    # connections made accept() fail with EMFILE, and uvloop (libuv) then closes the waiting
    # connections unanswered and logs nothing. Take all the hard limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20  # Linux's default nr_open
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        workers=arguments.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # httptools with a bounded request head: 431 past 16 KiB or 100 header fields.
        http="api.protocol:HeadLimitedHttpToolsProtocol",
    )
    return 0


def cmd_worker(arguments: argparse.Namespace) -> int:
    return _celery(
        "worker",
        "--queues=transfers,maintenance",
        f"--concurrency={arguments.concurrency}",
        f"--pool={arguments.pool}",
        "--without-mingle",
        "--without-gossip",
        f"--loglevel={load_settings().log_level}",
    )


def cmd_beat(_: argparse.Namespace) -> int:
    from shared.embedded import default_home

    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    return _celery("beat", f"--schedule={home / 'celerybeat-schedule'}", "--loglevel=WARNING")


def cmd_flower(_: argparse.Namespace) -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("FLOWER_PORT", "5555")
    return _celery("flower", f"--address={host}", f"--port={port}")


def cmd_audit(_: argparse.Namespace) -> int:
    from shared.db.database import SyncDatabase
    from shared.db.engine import create_worker_engine
    from shared.services.audit import audit_ledger

    engine = create_worker_engine(load_settings(), application_name="mini-ledger-audit")
    report = audit_ledger(SyncDatabase(engine))
    engine.dispose()
    summary = {"ok": report.ok, "pending": report.pending_transfers, **report.violations}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if report.ok else 1


def cmd_import(arguments: argparse.Namespace) -> int:
    from shared.importer import run_import

    path = Path(arguments.file)
    rejects = Path(arguments.rejects or f"{path}.rejects.csv")
    try:
        progress = run_import(path, arguments.url, arguments.batch_size, rejects, arguments.wait)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: run the same command again to resume (nothing repeats)\n")
        return 130
    elapsed = time.monotonic() - progress.started
    summary = {
        "rows": progress.rows,
        "accepted": progress.accepted,
        "refused": progress.refused,
        "completed": progress.completed,
        "failed": progress.failed,
        "pending": progress.accepted - progress.settled,
        "batches": len(progress.batches),
        "elapsed_s": round(elapsed, 2),
        "settled_per_s": round(progress.settled / elapsed, 1) if elapsed > 0 else None,
        "rejects": str(rejects),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mini-ledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="zero-config: embedded servers + every Procfile process")
    commands.add_parser("migrate", help="create the database if missing and migrate it")
    api = commands.add_parser("api", help="the HTTP API (uvicorn; HOST, PORT)")
    api.add_argument("--workers", type=int, default=int(os.environ.get("API_WORKERS", "1")))
    worker = commands.add_parser("worker", help="a Celery worker applying transfers")
    worker.add_argument(
        "--concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", "2"))
    )
    worker.add_argument("--pool", default=os.environ.get("WORKER_POOL", "prefork"))
    commands.add_parser("beat", help="the periodic sweep of stale pending transfers")
    commands.add_parser("flower", help="Flower, the queue dashboard (FLOWER_PORT)")
    commands.add_parser("audit", help="check every ledger invariant; exit 1 if one breaks")
    importer = commands.add_parser(
        "import", help="stream a CSV or JSON Lines file of transfers in (resumable)"
    )
    importer.add_argument("file", help="idempotency_key,from_merchant,to_merchant,amount,currency")
    importer.add_argument(
        "--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}", help="the API"
    )
    importer.add_argument("--batch-size", type=int, default=1000, help="rows per POST /batches")
    importer.add_argument("--rejects", help="where refused rows go (default: FILE.rejects.csv)")
    importer.add_argument(
        "--wait", action="store_true", help="wait until every accepted transfer is final"
    )
    return parser


HANDLERS = {
    "run": cmd_run,
    "migrate": cmd_migrate,
    "api": cmd_api,
    "worker": cmd_worker,
    "beat": cmd_beat,
    "flower": cmd_flower,
    "audit": cmd_audit,
    "import": cmd_import,
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return HANDLERS[arguments.command](arguments)


if __name__ == "__main__":
    sys.exit(main())
