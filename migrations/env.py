"""Alembic environment: migrates the configured database under a PostgreSQL advisory lock.

Several processes may start at once (API, workers, a one-shot migrate); the lock makes the
first one migrate and the others wait, then find nothing to do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from shared.db.tables import metadata
from shared.infra.config import get_settings

MIGRATION_LOCK_ID = 0x6D696E69  # "mini"


def run_migrations_online() -> None:
    url = context.config.attributes.get("url") or get_settings().database_url
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


run_migrations_online()
