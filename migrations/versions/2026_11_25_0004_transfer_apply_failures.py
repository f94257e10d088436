"""Transfers count the times applying them raised, so a poison transfer fails after a bound.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A constant default: PostgreSQL adds the column without rewriting the table.
UPGRADE = """
ALTER TABLE transfers
    ADD COLUMN apply_failures smallint NOT NULL DEFAULT 0,
    ADD CONSTRAINT ck_transfers_apply_failures CHECK (apply_failures >= 0);
"""

DOWNGRADE = """
ALTER TABLE transfers DROP COLUMN apply_failures;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
