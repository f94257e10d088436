"""The zero-config run's home (`$MINI_LEDGER_HOME`, default `./.mini-ledger`): one run per home,
and what the other commands need to find it.

- `mini-ledger run` holds an exclusive `flock` on `run.lock` for its whole life. The kernel
  releases it when the process ends, however it ends (SIGKILL included), so a killed run leaves
  no stale lock: the next run simply takes it.
- While it holds the lock, the run publishes `instance.json` (mode 0600): its pid, its URLs and
  the POSTGRES_*/REDIS_* settings its processes use. A clean stop removes it.
- `audit`, `migrate`, `keys`, `import` and `psql` read it when the environment names no
  PostgreSQL (`POSTGRES_HOST` unset). The lock, not the file, says whether a run is alive: a file
  left by a killed run is ignored, and with nothing running they refuse rather than guess
  127.0.0.1:5432.

Standard library only: the production image imports this module (`mini-ledger beat`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LOCK_FILE = "run.lock"
# Set in the environment of every process a run starts: its leftovers, if it is killed, are
# recognised by it (with MINI_LEDGER_HOME) and stopped by the next run on the home.
RUN_VARIABLE = "MINI_LEDGER_RUN"
INSTANCE_FILE = "instance.json"
# What a command needs to reach the run's servers; the same variables a deployment sets.
SERVER_VARIABLES = (
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
)
# A command probing the lock holds it (shared) for microseconds; a run starting at that moment
# tries again for this long before it concludes another run holds the home.
LOCK_CONTENTION_S = 0.5


def default_home() -> Path:
    """`$MINI_LEDGER_HOME`, else `./.mini-ledger`, as an absolute path."""
    return Path(os.environ.get("MINI_LEDGER_HOME") or ".mini-ledger").resolve()


@dataclass(frozen=True)
class Instance:
    """A running `mini-ledger run`, as it describes itself in its home's `instance.json`."""

    pid: int
    home: Path
    api_url: str
    flower_url: str
    # POSTGRES_*/REDIS_* of the servers its processes use; empty while it is still starting.
    settings: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"pid {self.pid}: API {self.api_url}, Flower {self.flower_url}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "home": str(self.home),
                "api_url": self.api_url,
                "flower_url": self.flower_url,
                "settings": self.settings,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Instance:
        data = json.loads(text)
        return cls(
            pid=int(data["pid"]),
            home=Path(data["home"]),
            api_url=str(data["api_url"]),
            flower_url=str(data["flower_url"]),
            settings={str(k): str(v) for k, v in (data.get("settings") or {}).items()},
        )


class HomeError(Exception):
    """A refusal worth one line to the user; `str()` is that line."""


class HomeBusy(HomeError):
    """Another run holds the home."""

    def __init__(self, home: Path, instance: Instance | None) -> None:
        self.home = home
        self.instance = instance
        if instance is None:
            what = f"mini-ledger is already starting in {home}"
        else:
            what = f"mini-ledger is already running in {home} ({instance.describe()})"
        super().__init__(
            f"{what}; stop it first (Ctrl-C, or SIGTERM to its pid), or use another"
            " MINI_LEDGER_HOME, PORT and FLOWER_PORT for a second instance"
        )


class PortInUse(HomeError):
    def __init__(self, role: str, host: str, port: int, variable: str) -> None:
        self.port = port
        super().__init__(
            f"port {port} on {host} ({role}) is already in use: stop what listens there,"
            f" or set {variable} to another port"
        )


class NothingRunning(HomeError):
    """Nothing configured and no run to find: refuse, never fall back to a default server."""

    def __init__(self, home: Path, starting: Instance | None = None) -> None:
        self.home = home
        if starting is not None:
            pid = f" (pid {starting.pid})" if starting.pid else ""
            message = f"mini-ledger in {home}{pid} is still starting: try again in a moment"
        else:
            message = (
                f"nothing is running in {home}: start `make run`, or set POSTGRES_HOST"
                " (and POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB)"
                " to use a configured PostgreSQL"
            )
        super().__init__(message)


class HomeLock:
    """A run's exclusive hold on its home, from `acquire` to `release` (or its death)."""

    def __init__(self, home: Path, descriptor: int, previous: Instance | None = None) -> None:
        self.home = home
        self._descriptor: int | None = descriptor
        # The run that held the home before and was killed (it left its instance.json).
        self.previous = previous

    @classmethod
    def acquire(cls, home: Path) -> HomeLock:
        """Take the home, or raise `HomeBusy` naming the run that has it.

        Refused, it has changed nothing: the lock file is opened, never truncated, and no other
        file is written or removed.
        """
        home.mkdir(parents=True, exist_ok=True)
        # os.open's descriptors are not inherited by children: the lock dies with this process.
        descriptor = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_CONTENTION_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(descriptor)
                raise HomeBusy(home, _read_instance(home)) from None
        # Ours now: whatever instance.json remains is a killed run's.
        previous = _read_instance(home, alive_only=False)
        (home / INSTANCE_FILE).unlink(missing_ok=True)
        return cls(home, descriptor, previous)

    def publish(self, instance: Instance) -> None:
        """Write `instance.json` (0600) in one step: a reader sees the old file or the new one."""
        path = self.home / INSTANCE_FILE
        partial = path.with_name(f".{INSTANCE_FILE}.{os.getpid()}")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(instance.to_json() + "\n")
        os.replace(partial, path)

    def release(self) -> None:
        """A clean stop: `instance.json` removed, then the lock let go."""
        if self._descriptor is None:
            return
        (self.home / INSTANCE_FILE).unlink(missing_ok=True)
        os.close(self._descriptor)  # Closing the last descriptor releases the flock.
        self._descriptor = None


def _is_locked(home: Path) -> bool:
    """Whether a run holds the home right now (its lock, not a file, is the truth)."""
    try:
        descriptor = os.open(home / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # Also releases the shared lock, if it was taken.
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Alive, someone else's.
    return True


def _read_instance(home: Path, alive_only: bool = True) -> Instance | None:
    """The published instance, if its file is whole (and, unless told, its pid alive)."""
    try:
        instance = Instance.from_json((home / INSTANCE_FILE).read_text())
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return instance if not alive_only or _pid_alive(instance.pid) else None


def stop_leftovers(killed: Instance, timeout_s: float = 15) -> int:
    """Stop what a killed run left running (its API, worker, beat, Flower and their children:
    every process whose environment carries its `RUN_VARIABLE` and home), SIGTERM then SIGKILL.
    Only called by a run holding the home, so none of them belongs to a live run. Its embedded
    servers are recovered by `cli.embedded` (Redis saved and stopped, PostgreSQL joined).
    Returns how many processes were stopped (none where psutil is missing)."""
    try:
        import psutil
    except ImportError:
        return 0
    wanted = {RUN_VARIABLE: str(killed.pid), "MINI_LEDGER_HOME": str(killed.home)}
    found = []
    for process in psutil.process_iter():
        try:
            environ = process.environ()
        except (psutil.Error, OSError):
            continue
        if process.pid != os.getpid() and all(environ.get(k) == v for k, v in wanted.items()):
            found.append(process)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(found)


def running_instance(home: Path) -> Instance | None:
    """The run holding `home`, or None when none does (a killed run's file is ignored).

    An instance with empty `settings` is still starting.
    """
    if not _is_locked(home):
        return None
    instance = _read_instance(home)
    if instance is None:  # Locked, not yet published: it has only just started.
        return Instance(pid=0, home=home, api_url="", flower_url="")
    return instance


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the environment names a PostgreSQL itself (then it is used as it is)."""
    return bool(environ.get("POSTGRES_HOST", "").strip())


def server_environment(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """What to add to `environ` so that settings loaded from it reach the ledger's servers.

    Nothing when the environment is configured; else the settings of the run in `home`.
    Raises `NothingRunning` when there is none (or it has not published them yet).
    """
    if configured(environ):
        return {}
    instance = running_instance(home)
    if instance is None:
        raise NothingRunning(home)
    if not instance.settings:
        raise NothingRunning(home, starting=instance)
    return dict(instance.settings)


def find_instance(environ: Mapping[str, str], home: Path) -> Instance | None:
    """The run in `home` for a command that talks to its API: None when the environment is
    configured (the caller keeps its own defaults); raises `NothingRunning` when nothing runs."""
    if configured(environ):
        return None
    instance = running_instance(home)
    if instance is None:
        raise NothingRunning(home)
    if not instance.api_url:
        raise NothingRunning(home, starting=instance)
    return instance


def check_ports_free(host: str, ports: Mapping[str, tuple[int, str]]) -> None:
    """Raise `PortInUse` for the first of `ports` ({role: (port, variable)}) that `host` cannot
    bind. Bound as the servers bind (SO_REUSEADDR), so a port in TIME_WAIT counts as free."""
    for role, (port, variable) in ports.items():
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise PortInUse(role, host, port, variable) from None
                raise


def _family(host: str) -> socket.AddressFamily:
    with contextlib.suppress(OSError):
        socket.inet_pton(socket.AF_INET6, host)
        return socket.AF_INET6
    return socket.AF_INET
