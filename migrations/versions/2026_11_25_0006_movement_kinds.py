"""Kinds of movement: deposits, withdrawals and reversals beside transfers; statement times.

Every existing row is a `transfer` with nothing reversed. A deposit has no sender and a
withdrawal no receiver; a reversal names the transfer it gives back. A completed transfer keeps
the running totals of its completed reversals (`reversed_amount`, `reversed_fee`): the only
columns of a final transfer that ever change, and only upwards, never past the transfer itself.

Journal entries are stamped when they are written (`clock_timestamp()`, after the account's row
lock is held), not when their transaction began, so an account's entries are in time order
exactly as in version order: a statement's time window is a range of versions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_GUARD_0005 = """
CREATE OR REPLACE FUNCTION transfers_guard_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'pending' THEN
        RAISE EXCEPTION 'transfer % is final (%): it cannot change', OLD.id, OLD.state
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.idempotency_scope, NEW.idempotency_key, NEW.request_fingerprint,
        NEW.from_merchant_id, NEW.to_merchant_id, NEW.amount, NEW.fee, NEW.percent_fee,
        NEW.currency, NEW.created)
       IS DISTINCT FROM
       (OLD.id, OLD.idempotency_scope, OLD.idempotency_key, OLD.request_fingerprint,
        OLD.from_merchant_id, OLD.to_merchant_id, OLD.amount, OLD.fee, OLD.percent_fee,
        OLD.currency, OLD.created) THEN
        RAISE EXCEPTION 'transfer % is immutable but for its state', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
"""

UPGRADE = """
-- A row is a transfer, with nothing reversed yet, unless it says otherwise.
ALTER TABLE transfers ADD COLUMN kind varchar(16) NOT NULL DEFAULT 'transfer';
ALTER TABLE transfers ADD COLUMN reverses uuid;
ALTER TABLE transfers ADD COLUMN reversed_amount numeric(38, 8) DEFAULT 0;
ALTER TABLE transfers ADD COLUMN reversed_fee numeric(38, 8) DEFAULT 0;
ALTER TABLE transfers ALTER COLUMN from_merchant_id DROP NOT NULL;
ALTER TABLE transfers ALTER COLUMN to_merchant_id DROP NOT NULL;
ALTER TABLE transfers ADD CONSTRAINT fk_transfers_reverses_transfers
    FOREIGN KEY (reverses) REFERENCES transfers (id);
ALTER TABLE transfers ADD CONSTRAINT ck_transfers_kind
    CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'reversal'));
ALTER TABLE transfers ADD CONSTRAINT ck_transfers_parties CHECK (
    (from_merchant_id IS NULL) = (kind = 'deposit')
    AND (to_merchant_id IS NULL) = (kind = 'withdrawal')
);
ALTER TABLE transfers ADD CONSTRAINT ck_transfers_reverses
    CHECK ((kind = 'reversal') = (reverses IS NOT NULL));
ALTER TABLE transfers ADD CONSTRAINT ck_transfers_reversed CHECK (
    (kind = 'transfer') = (reversed_amount IS NOT NULL)
    AND (kind = 'transfer') = (reversed_fee IS NOT NULL)
    AND reversed_amount BETWEEN 0 AND amount
    AND reversed_fee BETWEEN 0 AND fee
);
ALTER TABLE transfers ADD CONSTRAINT ck_transfers_feeless_kinds
    CHECK (kind NOT IN ('deposit', 'withdrawal') OR (fee = 0 AND percent_fee = 0));
-- The reversals of a transfer, summed at submission (pending ones count against the remainder).
CREATE INDEX ix_transfers_reverses ON transfers (reverses) WHERE reverses IS NOT NULL;

-- A final state never changes; a completed transfer's reversal totals only grow.
CREATE OR REPLACE FUNCTION transfers_guard_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.idempotency_scope, NEW.idempotency_key, NEW.request_fingerprint,
        NEW.kind, NEW.reverses, NEW.from_merchant_id, NEW.to_merchant_id, NEW.amount,
        NEW.percent_fee, NEW.currency, NEW.created)
       IS DISTINCT FROM
       (OLD.id, OLD.idempotency_scope, OLD.idempotency_key, OLD.request_fingerprint,
        OLD.kind, OLD.reverses, OLD.from_merchant_id, OLD.to_merchant_id, OLD.amount,
        OLD.percent_fee, OLD.currency, OLD.created) THEN
        RAISE EXCEPTION 'transfer % is immutable but for its state', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    -- A reversal's fee refund is settled by the worker under the original's lock.
    IF NEW.fee IS DISTINCT FROM OLD.fee AND NOT (OLD.kind = 'reversal' AND OLD.state = 'pending')
    THEN
        RAISE EXCEPTION 'transfer % is immutable but for its state', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.state = 'pending' THEN
        IF (NEW.reversed_amount, NEW.reversed_fee) IS DISTINCT FROM
           (OLD.reversed_amount, OLD.reversed_fee) THEN
            RAISE EXCEPTION 'transfer % is not completed: nothing of it is reversed', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.state, NEW.failure_reason, NEW.processed, NEW.enqueued, NEW.apply_failures)
       IS DISTINCT FROM
       (OLD.state, OLD.failure_reason, OLD.processed, OLD.enqueued, OLD.apply_failures)
       OR OLD.state <> 'completed'
       OR NEW.reversed_amount < OLD.reversed_amount OR NEW.reversed_fee < OLD.reversed_fee THEN
        RAISE EXCEPTION 'transfer % is final (%): it cannot change', OLD.id, OLD.state
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE entries ALTER COLUMN created SET DEFAULT clock_timestamp();
"""

DOWNGRADE = (
    _GUARD_0005
    + """
ALTER TABLE entries ALTER COLUMN created SET DEFAULT now();
DROP INDEX ix_transfers_reverses;
ALTER TABLE transfers DROP CONSTRAINT ck_transfers_feeless_kinds;
ALTER TABLE transfers DROP CONSTRAINT ck_transfers_reversed;
ALTER TABLE transfers DROP CONSTRAINT ck_transfers_reverses;
ALTER TABLE transfers DROP CONSTRAINT ck_transfers_parties;
ALTER TABLE transfers DROP CONSTRAINT ck_transfers_kind;
ALTER TABLE transfers DROP CONSTRAINT fk_transfers_reverses_transfers;
ALTER TABLE transfers ALTER COLUMN to_merchant_id SET NOT NULL;
ALTER TABLE transfers ALTER COLUMN from_merchant_id SET NOT NULL;
ALTER TABLE transfers DROP COLUMN reversed_fee;
ALTER TABLE transfers DROP COLUMN reversed_amount;
ALTER TABLE transfers DROP COLUMN reverses;
ALTER TABLE transfers DROP COLUMN kind;
"""
)


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
