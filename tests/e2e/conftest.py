"""Real processes: uvicorn API processes and Celery workers, talked to over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from cli.embedded import EmbeddedRedis
from tests.conftest import ADMIN_HEADERS, ROOT, Processes, start_beat, start_worker

STARTUP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_api(processes: Processes, env: dict[str, str] | None = None) -> str:
    port = free_port()
    processes.start("-m", "cli", "api", env={"HOST": "127.0.0.1", "PORT": str(port), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"API on {url} did not start")
        time.sleep(0.2)


class Stack:
    """A Redis of its own (killable), with its own API, worker and beat processes.

    The database is the shared test database; nothing else is shared with the session.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mini-ledger-stack-"))
        self.redis = EmbeddedRedis(self.folder)
        self.env = {**self.redis.start(), **(env or {})}
        self.processes = Processes()
        self.url = ""

    def start(self) -> None:
        os_env = dict(os.environ)
        try:
            os.environ.update(self.env)
            self.url = start_api(self.processes)
            self.api_pid = self.processes.running[-1].pid
            self.worker = start_worker(self.processes, f"fault-{time.monotonic_ns()}")
            start_beat(self.processes)
        finally:
            os.environ.clear()
            os.environ.update(os_env)

    def start_worker(self) -> None:
        os_env = dict(os.environ)
        try:
            os.environ.update(self.env)
            self.worker = start_worker(self.processes, f"fault-{time.monotonic_ns()}")
        finally:
            os.environ.clear()
            os.environ.update(os_env)

    def stop(self) -> None:
        self.processes.stop_all()
        self.redis.stop()

    def processes_log(self, pid: int) -> str:
        return self.processes.log_paths[pid].read_text()


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    stack = Stack()
    stack.start()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers=ADMIN_HEADERS) as client:
        yield stack, client
    stack.stop()


@dataclass
class Cluster:
    """Two API processes sharing one database and Redis with the session's two workers."""

    urls: list[str]
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, index: int) -> httpx.AsyncClient:
        return self.clients[index % len(self.clients)]


@pytest.fixture(scope="session")
def api_processes(workers: Processes) -> Iterator[list[str]]:
    processes = Processes()
    urls = [start_api(processes), start_api(processes)]
    yield urls
    processes.stop_all()


@pytest.fixture
async def cluster(api_processes: list[str]) -> AsyncIterator[Cluster]:
    cluster = Cluster(api_processes)
    limits = httpx.Limits(max_connections=100)
    for url in api_processes:
        cluster.clients.append(
            httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=ADMIN_HEADERS)
        )
    yield cluster
    for client in cluster.clients:
        await client.aclose()


# Zero-config: `mini-ledger run` with nothing configured, as a user starts it (`make run`).
ZERO_CONFIG_STARTUP_S = 60
ZERO_CONFIG_STOP_S = 30
# Short, so the supervision test restarts quickly and sweeps within seconds.
ZERO_CONFIG_RESTART_DELAY_S = 3


def zero_config_env(home: Path) -> dict[str, str]:
    """The environment of a user who configured nothing: no POSTGRES_*/REDIS_*, a home and free
    ports of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "REDIS_"))}
    env |= {
        "MINI_LEDGER_HOME": str(home),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "RESTART_DELAY_S": str(ZERO_CONFIG_RESTART_DELAY_S),
        "STALE_PENDING_AFTER_S": "2",
        "SWEEP_INTERVAL_S": "1",
    }
    return env


@dataclass
class ZeroConfigRun:
    process: subprocess.Popen[bytes]
    home: Path
    url: str
    env: dict[str, str]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.env['FLOWER_PORT']}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """The run's own admin key, which its first start created in its home."""
        return {"Authorization": f"Bearer {(self.home / 'admin.key').read_text().strip()}"}

    def child(self, name: str) -> psutil.Process | None:
        """The run's child by role: `worker`, `beat`, `api`, `flower`, or `redis-server`."""
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.name() == name or name in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    def survivors(self) -> list[psutil.Process]:
        """Every process left of a run on this home: its command line names the home (the
        servers, beat) or its environment does (every process a run starts)."""
        home = str(self.home)
        found = []
        for process in psutil.process_iter(["cmdline", "environ"]):
            environ = process.info["environ"] or {}
            cmdline = " ".join(process.info["cmdline"] or [])
            if home in cmdline or environ.get("MINI_LEDGER_HOME") == home:
                found.append(process)
        return found

    def postmaster_pid(self) -> int:
        """From PostgreSQL's own record of the running server (postmaster.pid's first line)."""
        return int((self.home / "postgres" / "postmaster.pid").read_text().splitlines()[0])

    def cli(self, *arguments: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """`mini-ledger ARGUMENTS` as the user would type it beside the run: nothing
        configured, the same home."""
        return subprocess.run(
            [sys.executable, "-m", "cli", *arguments],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def audit(self) -> dict[str, object]:
        """`mini-ledger audit`, which finds the run's embedded PostgreSQL through its home."""
        result = self.cli("audit")
        assert result.returncode == 0, result.stdout + result.stderr
        report: dict[str, object] = json.loads(result.stdout)
        return report

    def published(self) -> bool:
        """Whether this run (not an earlier one) has published its servers in instance.json."""
        try:
            instance = json.loads((self.home / "instance.json").read_text())
        except (FileNotFoundError, ValueError):
            return False
        return bool(instance["pid"] == self.process.pid and instance["settings"])

    def wait_healthy(self, timeout_s: float = ZERO_CONFIG_STARTUP_S) -> None:
        """Until this run is ready (published) and its API answers /ready with 200."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (
                    self.published()
                    and httpx.get(f"{self.url}/ready", timeout=1).status_code == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, f"the run exited:\n{self.log[-4000:]}"
            assert time.monotonic() < deadline, f"not healthy in {timeout_s}s:\n{self.log[-4000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (SIGKILL past the stop timeout), then anything left of it killed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=ZERO_CONFIG_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for survivor in self.survivors():
            survivor.kill()


def launch_zero_config(
    home: Path, env: dict[str, str] | None = None, log_name: str = "run.log"
) -> ZeroConfigRun:
    """Start `mini-ledger run` on `home` (not waiting for it): `env`, else a fresh
    `zero_config_env`; its output in `home/log_name`."""
    env = env or zero_config_env(home)
    log_path = home / log_name
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ZeroConfigRun(process, home, f"http://127.0.0.1:{env['PORT']}", env, log_path)


@pytest.fixture
def zero_config_run() -> Iterator[ZeroConfigRun]:
    """A healthy zero-config run on a home of its own; stopped and removed after the test."""
    home = Path(tempfile.mkdtemp(prefix="ml-run-"))
    run = launch_zero_config(home)
    try:
        run.wait_healthy()
        yield run
    finally:
        run.stop()
        shutil.rmtree(home, ignore_errors=True)
