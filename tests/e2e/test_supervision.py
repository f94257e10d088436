"""Zero-config supervision: `mini-ledger run` restarts what dies, or stops everything.

One real run (embedded PostgreSQL and Redis, every Procfile process): the Celery worker's main
process is SIGKILLed and comes back; the embedded Redis is SIGKILLed and, while it is down,
submissions are still recorded and answered at once, `/ready` says so, and the sweep settles
them once Redis is back; the embedded PostgreSQL is SIGKILLed and comes back; the audit is
clean; SIGTERM stops everything. The give-up rule is
checked on the supervisor itself with a process that always fails.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from decimal import Decimal

import httpx
import psutil
import pytest
import structlog

from cli.supervisor import Command, RestartPolicy, Supervisor
from tests.conftest import ROOT
from tests.e2e.conftest import ZeroConfigRun
from tests.helpers import balance_of, create_merchant, funded_merchant, settle, submit

pytestmark = pytest.mark.e2e

STOP_TIMEOUT_S = 30
# A submission that waits on a dead broker would take seconds; one that does not, milliseconds.
PROMPT_S = 1.0


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
        # answered at once (202, pending), and /ready says Redis is down.
        redis_server = run.child("redis-server")
        assert redis_server is not None
        redis_server.kill()
        redis_server.wait(timeout=10)
        health = await client.get("/ready")
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
        health = await client.get("/ready")
        assert health.json()["result"]["redis"] is False, "Redis came back mid-test"
        assert '"redis died, restarting"' in run.log

        # Redis back: the sweep enqueues what was submitted during the outage.
        run.wait_healthy(30)
        settled = await settle(client, during_outage)
        assert {transfer["state"] for transfer in settled} == {"completed"}

        # The embedded PostgreSQL's postmaster: SIGKILLed, started again at the same socket.
        postmaster = psutil.Process(run.postmaster_pid())
        postmaster.kill()
        deadline = time.monotonic() + 30
        while '"postgres died, restarting"' not in run.log:
            assert time.monotonic() < deadline, run.log[-4000:]
            time.sleep(0.2)
        run.wait_healthy(30)  # The database answers again.
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
