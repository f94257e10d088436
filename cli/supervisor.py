"""A small process supervisor for `mini-ledger run`: restart what dies, or stop everything.

honcho (the Procfile runner used before) stops every process as soon as one exits; the
process managers that restart (supervisord, circus) are daemons with their own configuration
files. Zero-config needs neither, only this: every process, the embedded servers included, is
restarted with a growing delay when it dies; one that keeps dying stops the whole run with one
clear line, so the system is never left half alive.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import structlog

log = structlog.get_logger(__name__)

POLL_INTERVAL_S = 0.2
# How long a process may take to finish its work after SIGTERM (a Celery worker finishes the
# tasks it holds) before it is killed.
STOP_TIMEOUT_S = 15.0
PREFIX_WIDTH = 6
_output_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended: its exit code, negative for a signal (as `Popen.returncode`);
    None when it was not our child, so its status is unknown (the embedded PostgreSQL)."""

    code: int | None


class Service(Protocol):
    """Something the supervisor keeps running."""

    @property
    def name(self) -> str: ...

    def start(self) -> object:
        """Start it (again); raise if it cannot start."""
        ...

    def poll(self) -> Exit | None:
        """None while it runs."""
        ...

    def terminate(self) -> None:
        """Ask it to stop; it may take a while. Safe when it is not running."""
        ...

    def kill(self) -> None:
        """Stop it now, with anything it left behind. Safe when it is not running."""
        ...


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Restart after `first_delay_s`, doubling up to `max_delay_s`; a process that dies again
    after `max_restarts` restarts within `window_s` stops the run."""

    max_restarts: int = 5
    window_s: float = 60.0
    first_delay_s: float = 1.0
    max_delay_s: float = 10.0

    def delay_s(self, recent_restarts: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2**recent_restarts))


class Command:
    """A Procfile process: run without a shell, in its own session, its output prefixed.

    Its own session, so a Ctrl-C on the terminal reaches only the supervisor, which stops the
    processes in order; and so that `kill` takes its children (a Celery worker's pool) too.
    """

    def __init__(self, name: str, command: str, env: Mapping[str, str], cwd: Path) -> None:
        self._name = name
        self._argv = shlex.split(command)
        self._env = dict(env)
        self._cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        self._process = subprocess.Popen(
            self._argv,
            env=self._env,
            cwd=self._cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output = self._process.stdout
        if output is not None:
            relay = threading.Thread(target=_relay, args=(self._name, output), daemon=True)
            relay.start()

    def poll(self) -> Exit | None:
        code = None if self._process is None else self._process.poll()
        return None if self._process is not None and code is None else Exit(code)

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def kill(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):  # The group is gone.
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()


def _relay(name: str, output: IO[bytes]) -> None:
    """Copy a process's output to ours, each line prefixed with its name (as honcho did)."""
    prefix = f"{name.ljust(PREFIX_WIDTH)} | ".encode()
    with output:
        for line in iter(output.readline, b""):
            with _output_lock:
                sys.stdout.buffer.write(prefix + line)
                sys.stdout.buffer.flush()


def read_procfile(path: Path) -> dict[str, str]:
    """`name: command` lines; blank lines and comments skipped."""
    entries = (
        line.split(":", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): command.strip() for name, command in entries}


@dataclass
class _Watched:
    service: Service
    # When it was restarted, within the policy's window.
    restarts: deque[float] = field(default_factory=deque)
    # When a dead service is due to start again.
    restart_at: float | None = None


class Supervisor:
    """Services in layers: started in order, watched together, stopped in reverse order (the
    processes first, then the servers they use)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._layers: list[list[_Watched]] = []
        self._stop_requested = False

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self, *_: object) -> None:
        """A signal handler: only a flag, so the stop runs in order from the main loop."""
        self._stop_requested = True

    def start(self, services: Sequence[Service]) -> None:
        """Start a layer of services, in order."""
        layer: list[_Watched] = []
        self._layers.append(layer)
        for service in services:
            layer.append(_Watched(service))  # Before it starts: `stop` covers a partial start.
            service.start()

    def adopt(self, services: Sequence[Service]) -> None:
        """Watch a layer of services that are already running."""
        self._layers.append([_Watched(service) for service in services])

    def watch(self) -> int:
        """Until a stop is requested (0) or a process dies more often than the policy allows (1)."""
        while not self._stop_requested:
            now = time.monotonic()
            for watched in (watched for layer in self._layers for watched in layer):
                if watched.restart_at is not None:
                    if now >= watched.restart_at and not self._restart(watched):
                        return 1
                elif (ended := watched.service.poll()) is not None:
                    watched.service.kill()  # What it left behind (a worker's pool) goes too.
                    if not self._schedule_restart(watched, now, exit_code=ended.code):
                        return 1
            time.sleep(POLL_INTERVAL_S)
        log.info("stop requested, stopping every process")
        return 0

    def _restart(self, watched: _Watched) -> bool:
        watched.restart_at = None
        try:
            watched.service.start()
        except Exception as error:  # Whatever stops a start is one more death.
            watched.service.kill()
            return self._schedule_restart(watched, time.monotonic(), error=str(error))
        return True

    def _schedule_restart(self, watched: _Watched, now: float, **cause: object) -> bool:
        """One line per death (`cause`: its exit code, or why it did not start); False when
        the service is past its restarts for the window."""
        policy = self._policy
        while watched.restarts and now - watched.restarts[0] > policy.window_s:
            watched.restarts.popleft()
        recent = len(watched.restarts)
        name = watched.service.name
        if recent >= policy.max_restarts:
            log.error(
                f"{name} keeps dying, stopping everything",
                process=name,
                **cause,
                restarts=recent,
                window_s=policy.window_s,
            )
            return False
        delay_s = policy.delay_s(recent)
        watched.restarts.append(now)
        watched.restart_at = now + delay_s
        log.warning(
            f"{name} died, restarting",
            process=name,
            **cause,
            restart=recent + 1,
            max_restarts=policy.max_restarts,
            delay_s=delay_s,
        )
        return True

    def stop(self) -> None:
        """Stop every layer, the last started first; each layer's services together."""
        while self._layers:
            layer = self._layers.pop()
            for watched in reversed(layer):
                watched.service.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and any(w.service.poll() is None for w in layer):
                time.sleep(POLL_INTERVAL_S)
            for watched in layer:
                watched.service.kill()
