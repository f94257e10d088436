"""Real processes: uvicorn API processes and Celery workers, talked to over HTTP."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cli.embedded import EmbeddedRedis
from tests.conftest import ADMIN_HEADERS, Processes, start_beat, start_worker

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
