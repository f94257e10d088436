"""`mini-ledger`: run everything (zero-config), or one process, migrate, audit."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from shared.infra.config import Settings, get_settings, load_settings

if TYPE_CHECKING:
    from shared.domain.api_keys import ApiKey
    from shared.infra.database import Database

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Zero-config's secrets, in its home, readable by its owner only.
ADMIN_KEY_FILE = "admin.key"
FLOWER_PASSWORD_FILE = "flower.password"
KEEP_ALIVE_S = 75
# The exit code of a command that found no ledger to work on (nothing configured, nothing running).
NOTHING_RUNNING = 2
T = TypeVar("T")


def _celery(*arguments: str) -> int:
    """Replace this process with Celery, so signals reach it directly."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", *arguments]
    os.execv(sys.executable, argv)


def cmd_run(_: argparse.Namespace) -> int:
    """Embedded servers for what the environment leaves unset, migrations, then the Procfile's
    processes, every one of them supervised (`cli.supervisor`) until Ctrl-C or SIGTERM.

    One run per home (`cli.home`): the home's lock and the ports are checked before anything
    starts, and a refused run changes nothing of the running one.
    """
    from cli.embedded import EmbeddedServers
    from cli.home import (
        RUN_VARIABLE,
        HomeBusy,
        HomeLock,
        Instance,
        PortInUse,
        check_ports_free,
        default_home,
        stop_leftovers,
    )
    from cli.supervisor import Command, RestartPolicy, Supervisor, read_procfile
    from shared.db.migrate import migrate
    from shared.infra.logging import configure_logging

    configure_logging(load_settings())
    home = default_home()
    host = os.environ.get("HOST", "127.0.0.1")
    api_port = int(os.environ.get("PORT", "8000"))
    flower_port = int(os.environ.get("FLOWER_PORT", "5555"))
    try:
        lock = HomeLock.acquire(home)
    except HomeBusy as busy:
        sys.stderr.write(f"{busy}\n")
        return 1
    if lock.previous is not None and (stopped := stop_leftovers(lock.previous)):
        sys.stderr.write(
            f"the run killed in {home} (pid {lock.previous.pid}) left {stopped} processes"
            " running: stopped them\n"
        )
    try:
        check_ports_free(host, {"API": (api_port, "PORT"), "Flower": (flower_port, "FLOWER_PORT")})
    except PortInUse as taken:
        lock.release()
        sys.stderr.write(f"{taken}\n")
        return 1
    instance = Instance(
        os.getpid(), home, f"http://{host}:{api_port}", f"http://{host}:{flower_port}"
    )
    lock.publish(instance)  # Its pid and URLs at once; its servers once they are ready.
    supervisor = Supervisor(
        RestartPolicy(first_delay_s=float(os.environ.get("RESTART_DELAY_S") or "1"))
    )
    # Only a flag: the stop runs from the main loop, processes first, servers last.
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    servers = EmbeddedServers(home)
    environment = dict(os.environ)
    try:
        environment |= servers.start(environment)
        supervisor.adopt(servers.started())
        # Children find `mini-ledger` and this interpreter first on PATH.
        bin_dir = str(Path(sys.executable).parent)
        environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
        environment["MINI_LEDGER_HOME"] = str(home)
        environment[RUN_VARIABLE] = str(os.getpid())  # What marks this run's processes.
        environment.setdefault("PYTHONUNBUFFERED", "1")
        # A local run: webhooks may go to a receiver on this machine (SPEC: zero-config sets it).
        environment.setdefault("WEBHOOK_ALLOW_PRIVATE", "true")
        os.environ.update(environment)
        get_settings.cache_clear()
        settings = load_settings()
        migrate(settings)
        if supervisor.stop_requested:
            return 0
        new_admin_secret = _ensure_admin_key(home)
        environment.setdefault("FLOWER_BASIC_AUTH", f"admin:{_flower_password(home)}")
        lock.publish(dataclasses.replace(instance, settings=_server_settings(settings)))
        sys.stderr.write(
            f"Mini Ledger: API {instance.api_url} (Swagger UI at /docs),"
            f" Flower {instance.flower_url} (user admin, password in"
            f" {home / FLOWER_PASSWORD_FILE}), data in {home}. Ctrl-C stops everything.\n"
        )
        if new_admin_secret is not None:
            sys.stderr.write(
                f"Admin API key (shown once; kept in {home / ADMIN_KEY_FILE}): {new_admin_secret}\n"
            )
        procfile = read_procfile(PROJECT_ROOT / "Procfile")
        supervisor.start(
            [Command(name, line, environment, PROJECT_ROOT) for name, line in procfile.items()]
        )
        return supervisor.watch()
    finally:
        supervisor.stop()
        lock.release()


def _server_settings(settings: Settings) -> dict[str, str]:
    """The POSTGRES_*/REDIS_* a command needs to reach the run's servers (its `instance.json`)."""
    return {
        "POSTGRES_HOST": settings.postgres_host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": settings.postgres_password,
        "POSTGRES_DB": settings.postgres_db,
        "REDIS_HOST": settings.redis_host,
        "REDIS_PORT": str(settings.redis_port),
        "REDIS_DB": str(settings.redis_db),
    }


def _find_servers() -> bool:
    """Point this process's settings at the ledger's servers: the environment's when it names a
    PostgreSQL, else those of the run in the home (`cli.home`). False, with the reason on stderr,
    when there is neither: never a silent fall-back to a default server."""
    from cli.home import NothingRunning, default_home, server_environment

    try:
        found = server_environment(os.environ, default_home())
    except NothingRunning as nothing:
        sys.stderr.write(f"{nothing}\n")
        return False
    os.environ.update(found)
    get_settings.cache_clear()
    return True


def _write_private(path: Path, text: str) -> None:
    """Create or replace `path` readable by its owner only (0600 from the first byte)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")


def _ensure_admin_key(home: Path) -> str | None:
    """The admin key of this home: reused if still live, else created and written (0600).

    Returns the secret when it is new, so the banner shows it once.
    """
    from shared.services.api_keys import ensure_admin_key

    path = home / ADMIN_KEY_FILE
    existing = path.read_text().strip() if path.exists() else None
    created = _run_async(lambda db: ensure_admin_key(db, existing))
    if created is None:
        return None
    _write_private(path, created.secret)
    return created.secret


def _flower_password(home: Path) -> str:
    path = home / FLOWER_PASSWORD_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(18))
    return path.read_text().strip()


def _run_async(use_case: Callable[[Database], Awaitable[T]]) -> T:
    """Run one async use case of the API's services from the command line."""
    from shared.infra.database import Database
    from shared.infra.engine import create_api_engine

    async def run() -> T:
        engine = create_api_engine(load_settings())
        try:
            return await use_case(Database(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def cmd_keys(arguments: argparse.Namespace) -> int:
    """`mini-ledger keys create|list|revoke`: the operator's key management."""
    from shared.domain.access import OPERATOR, Scope, parse_rate_limit
    from shared.services import api_keys

    if not _find_servers():
        return NOTHING_RUNNING
    if arguments.action == "list":
        keys = _run_async(lambda db: api_keys.list_api_keys(db, OPERATOR))
        for key in keys:
            sys.stdout.write(json.dumps(_key_summary(key)) + "\n")
        return 0
    if arguments.action == "revoke":
        key = _run_async(lambda db: api_keys.revoke_api_key(db, OPERATOR, uuid.UUID(arguments.id)))
        sys.stdout.write(json.dumps(_key_summary(key)) + "\n")
        return 0
    scope = Scope.READ if arguments.read_only else Scope.WRITE
    rate_limit = None if arguments.rate_limit is None else parse_rate_limit(arguments.rate_limit)
    name = arguments.name or (f"{arguments.merchant} key" if arguments.merchant else "admin key")
    created = _run_async(
        lambda db: api_keys.create_api_key(
            db, OPERATOR, name, arguments.merchant, scope, rate_limit
        )
    )
    sys.stdout.write(json.dumps(_key_summary(created.key)) + "\n")
    sys.stdout.write(created.secret + "\n")  # Alone on the last line, for scripts.
    return 0


def _key_summary(key: ApiKey) -> dict[str, object]:
    return {
        "id": str(key.id),
        "name": key.name,
        "merchant": key.merchant_name,
        "scope": key.scope.value,
        "rate_limit": None if key.rate_limit is None else str(key.rate_limit),
        "created": key.created.isoformat(),
        "revoked": None if key.revoked is None else key.revoked.isoformat(),
    }


def cmd_migrate(_: argparse.Namespace) -> int:
    from shared.db.migrate import migrate

    if not _find_servers():
        return NOTHING_RUNNING
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
    metrics_dir = _prepare_metrics_dir()
    if metrics_dir is not None:
        signal.signal(signal.SIGTERM, _removing_then_dying(metrics_dir))
    try:
        uvicorn.run(
            "api.main:create_app",
            factory=True,
            host=os.environ.get("HOST", "127.0.0.1"),
            port=int(os.environ.get("PORT", "8000")),
            workers=arguments.workers,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            # Idle keep-alive connections outlive the client's (httpx: 5 s; load balancers: 60 s):
            # when the server closed first, at uvicorn's default 5 s, a client could send on the
            # closing connection and get no answer at all.
            timeout_keep_alive=KEEP_ALIVE_S,
            # httptools with a bounded request head: 431 past 16 KiB or 100 header fields.
            http="api.protocol:HeadLimitedHttpToolsProtocol",
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _removing_then_dying(directory: Path) -> Callable[[int, object], None]:
    """A SIGTERM handler that removes `directory`, then ends the process by the signal.

    uvicorn, its graceful shutdown done, restores the handler it found and raises the SIGTERM
    it caught again: the process ends as it always did, without leaving the directory behind.
    """

    def handle(signum: int, _: object) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    return handle


def _prepare_metrics_dir() -> Path | None:
    """One metrics directory for this API server's processes, emptied (`api/metrics.py`).

    Set before uvicorn starts (its processes inherit it) and before prometheus_client is
    imported. `PROMETHEUS_MULTIPROC_DIR` names it, or a private temporary one is made (returned,
    to be removed at exit). Only its `*.db` files are removed: the files of an earlier run would
    add their counts to this one's.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not configured:
        created = Path(tempfile.mkdtemp(prefix="mini-ledger-api-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(created)
        return created
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return None


def cmd_worker(arguments: argparse.Namespace) -> int:
    from shared.infra.queue import WORKER_QUEUES
    from worker.metrics import METRICS_DIR_PREFIX

    # The pool's processes write their metrics to one directory the worker's exporter reads
    # (`worker/metrics.py`): private to this worker, and named before Celery starts, which
    # imports prometheus_client at once. The worker removes it when it stops.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    return _celery(
        "worker",
        f"--queues={','.join(WORKER_QUEUES)}",
        f"--concurrency={arguments.concurrency}",
        f"--pool={arguments.pool}",
        "--without-mingle",
        "--without-gossip",
        f"--loglevel={load_settings().log_level}",
    )


def cmd_beat(_: argparse.Namespace) -> int:
    from cli.home import default_home

    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    return _celery("beat", f"--schedule={home / 'celerybeat-schedule'}", "--loglevel=WARNING")


def cmd_flower(_: argparse.Namespace) -> int:
    """Flower behind basic auth (`FLOWER_BASIC_AUTH=user:password`; zero-config sets one)."""
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("FLOWER_PORT", "5555")
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if ":" not in basic_auth:
        sys.stderr.write("Flower needs FLOWER_BASIC_AUTH=user:password; refusing to start open\n")
        return 2
    # Flower reads FLOWER_BASIC_AUTH from the environment itself: the password stays off the
    # command line, where any local user could read it.
    return _celery("flower", f"--address={host}", f"--port={port}")


def cmd_audit(_: argparse.Namespace) -> int:
    """Every ledger invariant, from the database: prints `GET /v1/audit`'s result as one line
    of JSON (log lines go to stderr); exits 0 when it is ok, 1 when not."""
    from redis import Redis

    from shared.infra.database import SyncDatabase
    from shared.infra.engine import create_worker_engine
    from shared.infra.logging import configure_logging
    from shared.services.audit import audit_ledger

    if not _find_servers():
        return NOTHING_RUNNING
    settings = load_settings()
    configure_logging(settings)
    engine = create_worker_engine(settings, application_name="mini-ledger-audit")
    # Only to remember the outcome for /metrics: a Redis that does not answer soon is skipped.
    redis_timeout_s = 2
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=redis_timeout_s, socket_connect_timeout=redis_timeout_s
    )
    try:
        report = audit_ledger(SyncDatabase(engine), redis)
    finally:
        redis.close()
        engine.dispose()
    sys.stdout.write(json.dumps(report.result()) + "\n")
    return 0 if report.ok else 1


def cmd_psql(arguments: argparse.Namespace) -> int:
    """`mini-ledger psql [-- PSQL ARGUMENTS]`: psql on the ledger's database, the run's in the
    home or the configured one (the password goes by PGPASSWORD, never on the command line)."""
    from cli.embedded import psql_executable

    if not _find_servers():
        return NOTHING_RUNNING
    executable = psql_executable()
    if executable is None:
        sys.stderr.write("psql not found: install PostgreSQL's client (psql) on PATH\n")
        return NOTHING_RUNNING
    settings = load_settings()
    extra = arguments.psql_arguments
    if extra[:1] == ["--"]:
        extra = extra[1:]
    environment = dict(os.environ)
    environment |= {
        "PGHOST": settings.postgres_host,
        "PGPORT": str(settings.postgres_port),
        "PGUSER": settings.postgres_user,
        "PGDATABASE": settings.postgres_db,
        "PGAPPNAME": "mini-ledger-psql",
    }
    if settings.postgres_password:
        environment["PGPASSWORD"] = settings.postgres_password
    os.execve(executable, [executable, *extra], environment)


def cmd_import(arguments: argparse.Namespace) -> int:
    from cli.home import NothingRunning, default_home, find_instance
    from cli.importer import run_import

    path = Path(arguments.file)
    rejects = Path(arguments.rejects or f"{path}.rejects.csv")
    url = arguments.url
    if url is None:  # The run in the home, unless the environment names the servers.
        try:
            instance = find_instance(os.environ, default_home())
        except NothingRunning as nothing:
            sys.stderr.write(f"{nothing}\n")
            return NOTHING_RUNNING
        url = instance.api_url if instance else f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
    api_key = arguments.api_key
    if api_key is None and (key_file := default_home() / ADMIN_KEY_FILE).exists():
        api_key = key_file.read_text().strip()
    if not api_key:
        sys.stderr.write("no API key: pass --api-key, or set MINI_LEDGER_API_KEY\n")
        return 2
    try:
        failures = Path(arguments.failures) if arguments.failures else None
        progress = run_import(
            path, url, api_key, arguments.batch_size, rejects, arguments.wait, failures
        )
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: run the same command again to resume (nothing repeats)\n")
        return 130
    sys.stdout.write(json.dumps(progress.summary(rejects)) + "\n")
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
    psql = commands.add_parser(
        "psql", help="psql on the ledger's database (psql's own arguments after --)"
    )
    psql.add_argument("psql_arguments", nargs=argparse.REMAINDER, help="-- then psql's arguments")
    importer = commands.add_parser(
        "import", help="stream a CSV or JSON Lines file of transfers in (resumable)"
    )
    importer.add_argument("file", help="idempotency_key,from_merchant,to_merchant,amount,currency")
    importer.add_argument(
        "--url",
        help="the API (default: the run in MINI_LEDGER_HOME; with POSTGRES_HOST set,"
        " http://127.0.0.1:$PORT)",
    )
    importer.add_argument("--batch-size", type=int, default=1000, help="rows per POST /batches")
    importer.add_argument("--rejects", help="where refused rows go (default: FILE.rejects.csv)")
    importer.add_argument(
        "--failures",
        help="with --wait: where rows the workers failed go (default: FILE.failures.csv)",
    )
    importer.add_argument(
        "--wait", action="store_true", help="wait until every accepted transfer is final"
    )
    importer.add_argument(
        "--api-key",
        default=os.environ.get("MINI_LEDGER_API_KEY"),
        help="the key to submit with (default: $MINI_LEDGER_API_KEY, else zero-config's admin.key)",
    )
    keys = commands.add_parser("keys", help="create, list or revoke API keys")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="a new key; its secret is the last line")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--admin", action="store_true", help="a key that may do everything")
    owner.add_argument("--merchant", help="a key acting for this merchant only")
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--read-only", action="store_true", help="reads only (merchant keys)")
    create.add_argument("--rate-limit", help='e.g. "10/second" or "600/minute"')
    key_actions.add_parser("list", help="every key, without secrets")
    revoke = key_actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
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
    "psql": cmd_psql,
    "keys": cmd_keys,
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return HANDLERS[arguments.command](arguments)


if __name__ == "__main__":
    sys.exit(main())
