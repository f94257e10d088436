"""Settings from the environment (the README's variables); one frozen object per process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from sqlalchemy.engine import URL

from shared.domain.webhooks import DEFAULT_RETRY_SCHEDULE, parse_retry_schedule


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def _env_bool(name: str, default: bool) -> bool:
    return _env(name, str(default)).lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Settings:
    postgres_db: str
    postgres_user: str
    postgres_password: str
    # A host name, an IP address, or a directory holding PostgreSQL's Unix socket.
    postgres_host: str
    postgres_port: int
    # A host name or an IP address, or the path of Redis's Unix socket.
    redis_host: str
    redis_port: int
    redis_db: int
    log_level: str
    json_logs: bool
    # Every query of the API and the worker is bounded (TigerStyle: explicit limits).
    statement_timeout_ms: int
    db_pool_size: int
    # Redis balance locks: how long a holder may keep one, and how long a worker waits for it.
    lock_ttl_s: float
    lock_wait_s: float
    # A pending transfer whose last enqueue is older than this is enqueued again.
    stale_pending_after_s: float
    sweep_interval_s: float
    audit_interval_s: float
    # The console's session cookie is `Secure` over HTTPS; behind a proxy that ends TLS the API
    # sees plain HTTP, so this forces it.
    console_cookie_secure: bool
    # Requests per key when the key sets none ("<n>/second" or "<n>/minute"); admin keys are
    # unlimited unless `rate_limit_admin` is set.
    rate_limit_merchant: str
    rate_limit_admin: str | None
    # Webhooks: whether an endpoint may point at a loopback or private address (zero-config,
    # tests); the delays between failed attempts, after which a delivery is given up; requests
    # one worker has in flight; how often beat hands the delivery task out.
    webhook_allow_private: bool
    webhook_retry_schedule: tuple[float, ...]
    webhook_concurrency: int
    webhook_poll_interval_s: float

    @property
    def database_url(self) -> URL:
        return self.database_url_for(self.postgres_db)

    def database_url_for(self, database: str, driver: str = "postgresql+psycopg") -> URL:
        socket = self.postgres_host.startswith("/")
        return URL.create(
            driver,
            username=self.postgres_user,
            password=self.postgres_password or None,
            host=None if socket else self.postgres_host,
            port=None if socket else self.postgres_port,
            database=database,
            query={"host": self.postgres_host, "port": str(self.postgres_port)} if socket else {},
        )

    @property
    def redis_url(self) -> str:
        """A redis-py URL (also what Celery's broker URL is built from)."""
        if self.redis_host.startswith("/"):
            return f"unix://{quote(self.redis_host)}?db={self.redis_db}"
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def broker_url(self) -> str:
        if self.redis_host.startswith("/"):
            return f"redis+socket://{quote(self.redis_host)}?virtual_host={self.redis_db}"
        return self.redis_url


def load_settings() -> Settings:
    return Settings(
        postgres_db=_env("POSTGRES_DB", "mini_ledger"),
        postgres_user=_env("POSTGRES_USER", "postgres"),
        postgres_password=os.environ.get("POSTGRES_PASSWORD", ""),
        postgres_host=_env("POSTGRES_HOST", "127.0.0.1"),
        postgres_port=int(_env("POSTGRES_PORT", "5432")),
        redis_host=_env("REDIS_HOST", "127.0.0.1"),
        redis_port=int(_env("REDIS_PORT", "6379")),
        redis_db=int(_env("REDIS_DB", "0")),
        log_level=_env("LOG_LEVEL", "INFO").upper(),
        json_logs=_env_bool("JSON_LOGS", True),
        statement_timeout_ms=int(_env("STATEMENT_TIMEOUT_MS", "10000")),
        db_pool_size=int(_env("DB_POOL_SIZE", "20")),
        lock_ttl_s=_env_float("LOCK_TTL_S", 30.0),
        lock_wait_s=_env_float("LOCK_WAIT_S", 0.5),
        stale_pending_after_s=_env_float("STALE_PENDING_AFTER_S", 30.0),
        sweep_interval_s=_env_float("SWEEP_INTERVAL_S", 10.0),
        audit_interval_s=_env_float("AUDIT_INTERVAL_S", 3600.0),
        console_cookie_secure=_env_bool("CONSOLE_COOKIE_SECURE", False),
        rate_limit_merchant=_env("RATE_LIMIT_MERCHANT", "100/second"),
        rate_limit_admin=os.environ.get("RATE_LIMIT_ADMIN", "").strip() or None,
        webhook_allow_private=_env_bool("WEBHOOK_ALLOW_PRIVATE", False),
        webhook_retry_schedule=parse_retry_schedule(
            _env("WEBHOOK_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE)
        ),
        webhook_concurrency=max(1, int(_env("WEBHOOK_CONCURRENCY", "32"))),
        webhook_poll_interval_s=_env_float("WEBHOOK_POLL_INTERVAL_S", 1.0),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
