"""One instance per home, and the tools that find it (`cli/home.py`).

Real zero-config runs (`mini-ledger run`, nothing configured): a second run on the same home
refuses in one line and changes nothing of the first, which keeps working; a SIGKILLed run's
home is taken over by the next run, which stops what the killed one left; `audit`, `migrate`,
`keys` and `psql` find a running system with no POSTGRES_* set, and refuse clearly when none
runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import pytest

from cli.embedded import EmbeddedRedis
from tests.conftest import ROOT
from tests.e2e.conftest import ZeroConfigRun, launch_zero_config, zero_config_env
from tests.helpers import create_merchant, funded_merchant, submit

pytestmark = pytest.mark.e2e

REFUSAL_TIMEOUT_S = 30
NOTHING_RUNNING = "nothing is running in"


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    """Inode, size and modification time: what rewriting, replacing or removing would change."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def _untouchables(run: ZeroConfigRun) -> dict[str, object]:
    """What a refused second run must leave exactly as it was."""
    redis_socket = EmbeddedRedis(run.home / "redis").socket_path
    files = ["instance.json", "admin.key", "flower.password", "run.lock", "redis/redis.conf"]
    state: dict[str, object] = {name: _fingerprint(run.home / name) for name in files}
    state["instance"] = (run.home / "instance.json").read_text()
    state["redis socket"] = _fingerprint(redis_socket)
    state["redis servers"] = sorted(
        process.pid
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "redis-server"
        and str(run.home) in " ".join(process.info["cmdline"] or [])
    )
    return state


async def _transfer_completes(run: ZeroConfigRun) -> None:
    async with httpx.AsyncClient(base_url=run.url, timeout=40, headers=run.admin_headers) as client:
        assert (await client.get("/health")).status_code == 200
        sender = await funded_merchant(client, "100", currency="EUR")
        receiver = await create_merchant(client)
        response = await submit(
            client, sender["name"], receiver["name"], "1", "EUR", headers={"Prefer": "wait=30"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"]["state"] == "completed"


def _refused(run: ZeroConfigRun) -> str:
    """The output of a run that must refuse at once (its exit code checked non-zero)."""
    run.process.wait(timeout=REFUSAL_TIMEOUT_S)
    assert run.process.returncode != 0, run.log
    return run.log


@pytest.mark.timeout(100)
async def test_a_second_run_on_one_home_refuses_and_touches_nothing(
    zero_config_run: ZeroConfigRun,
) -> None:
    first = zero_config_run
    before = _untouchables(first)

    # `make run` again, in the same checkout: same home, same ports.
    second = launch_zero_config(first.home, env=first.env, log_name="second.log")
    lines = _refused(second).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"already running in {first.home}" in lines[0]
    assert f"pid {first.process.pid}" in lines[0]
    assert f"API {first.url}" in lines[0]
    assert f"Flower {first.flower_url}" in lines[0]
    assert _untouchables(first) == before

    # Another home on the first one's ports: refused on the port, before starting anything.
    other_home = Path(tempfile.mkdtemp(prefix="ml-other-"))
    try:
        other_env = {**first.env, "MINI_LEDGER_HOME": str(other_home)}
        other = launch_zero_config(other_home, env=other_env)
        lines = _refused(other).strip().splitlines()
        assert len(lines) == 1, lines
        assert f"port {first.env['PORT']} on 127.0.0.1 (API) is already in use" in lines[0]
        assert not (other_home / "instance.json").exists()
        assert not (other_home / "postgres").exists()
        assert not (other_home / "redis").exists()
    finally:
        shutil.rmtree(other_home, ignore_errors=True)
    assert _untouchables(first) == before

    # The first run never noticed: healthy, and a transfer submitted now completes.
    await _transfer_completes(first)
    assert first.process.poll() is None


@pytest.mark.timeout(100)
async def test_a_killed_run_is_recovered_by_the_next(zero_config_run: ZeroConfigRun) -> None:
    killed = zero_config_run
    leftovers = [child.pid for child in psutil.Process(killed.process.pid).children()]
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait(timeout=10)
    # Its instance.json stays behind, but the lock went with it: nothing is running.
    assert (killed.home / "instance.json").exists()
    audit = killed.cli("audit")
    assert audit.returncode == 2
    assert f"{NOTHING_RUNNING} {killed.home}" in audit.stderr

    # The same `make run` again takes the home over, stops what the killed run left running
    # (its API still held the port), and works.
    # Same home, same ports (the leftover API and Flower held them).
    again = launch_zero_config(killed.home, env=killed.env, log_name="again.log")
    try:
        again.wait_healthy()
        assert f"the run killed in {killed.home} (pid {killed.process.pid}) left" in again.log
        assert not [pid for pid in leftovers if psutil.pid_exists(pid) and _is_leftover(pid)]
        instance = json.loads((again.home / "instance.json").read_text())
        assert instance["pid"] == again.process.pid
        await _transfer_completes(again)
        assert again.audit()["ok"] is True

        # A clean stop: everything down, PostgreSQL included, and instance.json removed.
        again.process.send_signal(signal.SIGTERM)
        assert again.process.wait(timeout=30) == 0, again.log[-4000:]
        assert not (again.home / "instance.json").exists()
        assert again.survivors() == []
    finally:
        again.stop()


def _is_leftover(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(100)
def test_tools_find_the_running_system_or_refuse(zero_config_run: ZeroConfigRun) -> None:
    run = zero_config_run
    assert not any(key.startswith("POSTGRES_") for key in run.env)

    # What the run published for the tools, readable by its owner only.
    path = run.home / "instance.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    instance = json.loads(path.read_text())
    assert instance["pid"] == run.process.pid
    assert instance["api_url"] == run.url
    assert instance["flower_url"] == run.flower_url
    assert instance["settings"]["POSTGRES_DB"] == "mini_ledger"
    assert {"POSTGRES_HOST", "POSTGRES_PORT", "REDIS_HOST"} <= set(instance["settings"])

    # Nothing configured: each command finds the run's embedded PostgreSQL.
    assert run.audit()["ok"] is True
    migrate = run.cli("migrate")
    assert migrate.returncode == 0, migrate.stderr
    keys = run.cli("keys", "list")
    assert keys.returncode == 0, keys.stderr
    assert any(json.loads(line)["name"] for line in keys.stdout.splitlines())
    psql = run.cli("psql", "--", "-At", "-c", "SELECT count(*) FROM alembic_version")
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "1"

    # A clean stop removes instance.json: from then on every tool refuses, never guessing.
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=30) == 0, run.log[-4000:]
    assert not path.exists()
    for arguments in (["audit"], ["migrate"], ["keys", "list"], ["psql"], ["import", "x.csv"]):
        result = run.cli(*arguments)
        assert result.returncode == 2, (arguments, result.stdout, result.stderr)
        assert result.stderr.strip() == (
            f"{NOTHING_RUNNING} {run.home}: start `make run`, or set POSTGRES_HOST (and"
            " POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB) to use a configured"
            " PostgreSQL"
        ), arguments

    # A home that never ran anything: the same refusal, and nothing created there.
    empty = Path(tempfile.mkdtemp(prefix="ml-empty-"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cli", "migrate"],
            cwd=ROOT,
            env=zero_config_env(empty),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert f"{NOTHING_RUNNING} {empty}" in result.stderr
        assert os.listdir(empty) == []
    finally:
        shutil.rmtree(empty, ignore_errors=True)
