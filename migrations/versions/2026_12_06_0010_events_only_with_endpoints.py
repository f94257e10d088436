"""The outbox records events only while some webhook endpoint exists.

An event nobody can receive costs the posting transaction an insert (three index entries) and
the delivery run a fan-out; a ledger without endpoints (the common case for a bulk importer) now
pays neither. Whether an endpoint exists is read in the trigger, in the transaction that makes
the transfers final (one probe of a small table per statement). An endpoint receives the events
of transfers made final after it was created, as before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION transfers_record_final_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (transfer_id, type, created)
    SELECT after.id, 'transfer.' || after.state, after.processed
    FROM transfers_after AS after
    JOIN transfers_before AS before ON before.id = after.id
    WHERE before.state = 'pending' AND after.state <> 'pending'{condition};
    RETURN NULL;
END $$;
"""

UPGRADE = _FUNCTION.format(
    condition="\n      AND EXISTS (SELECT FROM webhook_endpoints WHERE deleted IS NULL)"
)
DOWNGRADE = _FUNCTION.format(condition="")


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
