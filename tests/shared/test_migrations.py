"""Migrations: several processes starting at once all succeed, and the schema ends at head."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from sqlalchemy import create_engine, text

from shared.infra.config import load_settings
from tests.conftest import ROOT


def test_concurrent_migrate_runs_are_safe() -> None:
    database = f"mini_ledger_migrate_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "POSTGRES_DB": database}
    runs = [
        subprocess.Popen([sys.executable, "-m", "cli", "migrate"], cwd=ROOT, env=env)
        for _ in range(3)
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0]
    settings = load_settings()
    engine = create_engine(settings.database_url_for(database))
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    admin = create_engine(settings.database_url_for("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{database}" WITH (FORCE)'))
    admin.dispose()
    assert versions == [(_head_revision(),)]


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from shared.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(load_settings())).get_current_head()
    assert head is not None
    return head
