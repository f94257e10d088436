"""Zero-config supervision: `mini-ledger run` restarts what dies, or stops everything.

One real run (embedded PostgreSQL and Redis, every Procfile process): the Celery worker's main
process is SIGKILLed and comes back; the embedded Redis is SIGKILLed and, while it is down,
submissions are still recorded and answered at once, `/health` says so, and the sweep settles
them once Redis is back; the embedded PostgreSQL is SIGKILLed and comes back; the audit is
clean; SIGTERM stops everything. The give-up rule is
checked on the supervisor itself with a process that always fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import pytest
import structlog

from cli.supervisor import Command, RestartPolicy, Supervisor
from tests.e2e.conftest import free_port
from tests.helpers import balance_of, create_merchant, funded_merchant, settle, submit

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
# Long enough to submit during the outage, short enough for a quick test.
RESTART_DELAY_S = 3
# A submission that waits on a dead broker would take seconds; one that does not, milliseconds.
PROMPT_S = 1.0


@dataclass
class ZeroConfigRun:
    process: subprocess.Popen[bytes]
    home: Path
    url: str
    env: dict[str, str]

    @property
    def log(self) -> str:
        return (self.home / "run.log").read_text(errors="replace")

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
        """Every process left whose command line names this run's home (servers included)."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if str(self.home) in " ".join(process.info["cmdline"] or []):
                found.append(process)
        return found

    def postmaster_pid(self) -> int:
        return int(self._postmaster_lines()[0])

    def _postmaster_lines(self) -> list[str]:
        """PostgreSQL's own record of the running server: pid, data, start, port, socket..."""
        return (self.home / "postgres" / "postmaster.pid").read_text().splitlines()

    def audit(self) -> dict[str, object]:
        """`mini-ledger audit` against the run's embedded PostgreSQL."""
        lines = self._postmaster_lines()
        env = {**self.env, "POSTGRES_HOST": lines[4], "POSTGRES_PORT": lines[3]}
        result = subprocess.run(
            [sys.executable, "-m", "cli", "audit"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report: dict[str, object] = json.loads(result.stdout)
        return report


def _wait_healthy(run: ZeroConfigRun, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{run.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert run.process.poll() is None, f"the run exited:\n{run.log[-4000:]}"
        assert time.monotonic() < deadline, f"not healthy in {timeout_s}s:\n{run.log[-4000:]}"
        time.sleep(0.2)


@pytest.fixture
def zero_config_run() -> Iterator[ZeroConfigRun]:
    home = Path(tempfile.mkdtemp(prefix="ml-sup-"))
    port = free_port()
    # Nothing configured: the run starts its own PostgreSQL and Redis.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "REDIS_"))}
    env |= {
        "MINI_LEDGER_HOME": str(home),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "FLOWER_PORT": str(free_port()),
        "RESTART_DELAY_S": str(RESTART_DELAY_S),
        "STALE_PENDING_AFTER_S": "2",
        "SWEEP_INTERVAL_S": "1",
    }
    with (home / "run.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = ZeroConfigRun(process, home, f"http://127.0.0.1:{port}", env)
    try:
        _wait_healthy(run, STARTUP_TIMEOUT_S)
        yield run
    finally:
        if process.poll() is None:  # The test failed before its own stop.
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        for survivor in run.survivors():
            survivor.kill()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(180)
async def test_killed_worker_redis_and_postgres_come_back(zero_config_run: ZeroConfigRun) -> None:
    run = zero_config_run
    async with httpx.AsyncClient(base_url=run.url, timeout=30, headers=run.admin_headers) as client:
        sender = await funded_merchant(client, "1000", currency="BTC", percent_fee="1")
        receiver = await create_merchant(client)

        # The worker's main process: SIGKILLed, restarted, applying transfers again.
        worker = run.child("worker")
        assert worker is not None
        worker.kill()
        deadline = time.monotonic() + 30
        while (restarted := run.child("worker")) is None or restarted.pid == worker.pid:
            assert time.monotonic() < deadline, run.log[-4000:]
            time.sleep(0.2)
        assert '"worker died, restarting"' in run.log
        assert '"exit_code": -9' in run.log
        response = await submit(
            client, sender["name"], receiver["name"], "1", "BTC", headers={"Prefer": "wait=30"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"]["state"] == "completed"

        # The embedded Redis: SIGKILLed. Until it is back, submissions are recorded and
        # answered at once (202, pending), and /health says Redis is down.
        redis_server = run.child("redis-server")
        assert redis_server is not None
        redis_server.kill()
        redis_server.wait(timeout=10)
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["result"] == {"database": True, "redis": False}
        during_outage = []
        for _ in range(5):
            started = time.monotonic()
            response = await submit(client, sender["name"], receiver["name"], "2", "BTC")
            elapsed = time.monotonic() - started
            assert response.status_code == 202, response.text
            assert response.json()["result"]["state"] == "pending"
            assert elapsed < PROMPT_S, f"a submission took {elapsed:.2f}s with Redis down"
            during_outage.append(response.json()["result"]["id"])
        health = await client.get("/health")
        assert health.json()["result"]["redis"] is False, "Redis came back mid-test"
        assert '"redis died, restarting"' in run.log

        # Redis back: the sweep enqueues what was submitted during the outage.
        _wait_healthy(run, 30)
        settled = await settle(client, during_outage)
        assert {transfer["state"] for transfer in settled} == {"completed"}

        # The embedded PostgreSQL's postmaster: SIGKILLed, started again at the same socket.
        postmaster = psutil.Process(run.postmaster_pid())
        postmaster.kill()
        deadline = time.monotonic() + 30
        while '"postgres died, restarting"' not in run.log:
            assert time.monotonic() < deadline, run.log[-4000:]
            time.sleep(0.2)
        _wait_healthy(run, 30)  # The database answers again.
        response = await submit(
            client, sender["name"], receiver["name"], "3", "BTC", headers={"Prefer": "wait=30"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"]["state"] == "completed"

        assert await balance_of(client, receiver["name"], "BTC") == Decimal("14")
        # 1000 - 14 sent - 1% fee on it.
        assert await balance_of(client, sender["name"], "BTC") == Decimal("985.86")

    assert run.audit()["ok"] is True
    assert "keeps dying" not in run.log

    # SIGTERM stops everything, servers included, as a clean stop.
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=STOP_TIMEOUT_S) == 0, run.log[-4000:]
    assert run.survivors() == []


def test_a_process_that_keeps_dying_stops_everything() -> None:
    """Past its restarts in the window, a dying process stops the run: one error line, every
    other process stopped, exit code 1."""
    python = sys.executable
    crasher = Command("crasher", f"{python} -c 'raise SystemExit(3)'", os.environ, ROOT)
    sleeper = Command("sleeper", f"{python} -c 'import time; time.sleep(60)'", os.environ, ROOT)
    supervisor = Supervisor(RestartPolicy(max_restarts=2, first_delay_s=0.05))
    with structlog.testing.capture_logs() as logs:
        try:
            supervisor.start([sleeper, crasher])
            assert supervisor.watch() == 1
        finally:
            supervisor.stop()
    lines = [(line["event"], line.get("exit_code")) for line in logs]
    assert lines == [
        ("crasher died, restarting", 3),
        ("crasher died, restarting", 3),
        ("crasher keeps dying, stopping everything", 3),
    ]
    assert sleeper.poll() is not None
