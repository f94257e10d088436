"""Drop the index on entries.movement_id: no query on a hot path reads it.

Every transfer writes three entries, and each index on `entries` is three more index insertions
per transfer. The audit groups entries by movement with a full scan either way, and transfers
are never deleted, so the foreign key needs no index either.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX ix_entries_movement_id")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_entries_movement_id ON entries (movement_id)")
