"""Create the database if it is missing, then bring its schema to the newest migration."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from shared.infra.config import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
CREATE_LOCK_ID = 0x6D696E6A  # held in the maintenance database while creating ours


def ensure_database(settings: Settings) -> None:
    """CREATE DATABASE when absent, under an advisory lock: concurrent starters wait their turn."""
    engine = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": CREATE_LOCK_ID})
            try:
                exists = connection.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": settings.postgres_db},
                ).first()
                if exists is None:
                    quoted = connection.dialect.identifier_preparer.quote(settings.postgres_db)
                    connection.execute(text(f"CREATE DATABASE {quoted}"))
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": CREATE_LOCK_ID})
    finally:
        engine.dispose()


def alembic_config(settings: Settings) -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = settings.database_url
    return config


def migrate(settings: Settings) -> None:
    ensure_database(settings)
    command.upgrade(alembic_config(settings), "head")
