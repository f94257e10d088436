"""Batches: a bulk submission and the transfers it accepted, in order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE batches (
    id uuid NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    accepted integer NOT NULL,
    refused integer NOT NULL,
    CONSTRAINT pk_batches PRIMARY KEY (id),
    CONSTRAINT ck_batches_counts CHECK (accepted >= 0 AND refused >= 0)
);

-- Every transfer a batch accepted, created by it or replayed from an earlier request.
CREATE TABLE batch_items (
    batch_id uuid NOT NULL,
    position integer NOT NULL,
    transfer_id uuid NOT NULL,
    CONSTRAINT pk_batch_items PRIMARY KEY (batch_id, position),
    CONSTRAINT fk_batch_items_batch_id_batches FOREIGN KEY (batch_id) REFERENCES batches (id),
    CONSTRAINT fk_batch_items_transfer_id_transfers
        FOREIGN KEY (transfer_id) REFERENCES transfers (id),
    CONSTRAINT ck_batch_items_position CHECK (position >= 0)
);
"""

DOWNGRADE = """
DROP TABLE batch_items;
DROP TABLE batches;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
