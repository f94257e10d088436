"""The ledger: merchants, accounts, transfers and the append-only journal.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE merchants (
    id uuid NOT NULL,
    name varchar(64) NOT NULL,
    percent_fee numeric(5, 2) NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now(),
    archived boolean NOT NULL DEFAULT false,
    CONSTRAINT pk_merchants PRIMARY KEY (id),
    CONSTRAINT uq_merchants_name UNIQUE (name),
    CONSTRAINT ck_merchants_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
    CONSTRAINT ck_merchants_percent_fee_range CHECK (percent_fee BETWEEN 0 AND 100)
);

CREATE TABLE accounts (
    id uuid NOT NULL,
    kind varchar(16) NOT NULL,
    merchant_id uuid,
    currency varchar(10) NOT NULL,
    shard smallint,
    amount numeric(38, 8) NOT NULL,
    version bigint NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_accounts PRIMARY KEY (id),
    CONSTRAINT fk_accounts_merchant_id_merchants
        FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT ck_accounts_kind CHECK (kind IN ('merchant', 'fee', 'issuance')),
    CONSTRAINT ck_accounts_currency_code CHECK (currency ~ '^[A-Z0-9]{3,10}$'),
    CONSTRAINT ck_accounts_amount_not_negative CHECK (kind = 'issuance' OR amount >= 0),
    CONSTRAINT ck_accounts_merchant_owner CHECK ((kind = 'merchant') = (merchant_id IS NOT NULL)),
    CONSTRAINT ck_accounts_fee_shard CHECK ((kind = 'fee') = (shard IS NOT NULL))
);
CREATE UNIQUE INDEX uq_accounts_merchant_currency ON accounts (merchant_id, currency)
    WHERE kind = 'merchant';
CREATE UNIQUE INDEX uq_accounts_fee_currency_shard ON accounts (currency, shard)
    WHERE kind = 'fee';
CREATE UNIQUE INDEX uq_accounts_issuance_currency ON accounts (currency)
    WHERE kind = 'issuance';

CREATE TABLE transfers (
    id uuid NOT NULL,
    idempotency_key varchar(255) NOT NULL,
    request_fingerprint varchar(64) NOT NULL,
    from_merchant_id uuid NOT NULL,
    to_merchant_id uuid NOT NULL,
    amount numeric(38, 8) NOT NULL,
    fee numeric(38, 8) NOT NULL,
    percent_fee numeric(5, 2) NOT NULL,
    currency varchar(10) NOT NULL,
    state varchar(16) NOT NULL DEFAULT 'pending',
    failure_reason text,
    created timestamptz NOT NULL DEFAULT now(),
    processed timestamptz,
    enqueued timestamptz NOT NULL DEFAULT now(),
    request_id varchar(64),
    CONSTRAINT pk_transfers PRIMARY KEY (id),
    CONSTRAINT uq_transfers_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT fk_transfers_from_merchant_id_merchants
        FOREIGN KEY (from_merchant_id) REFERENCES merchants (id),
    CONSTRAINT fk_transfers_to_merchant_id_merchants
        FOREIGN KEY (to_merchant_id) REFERENCES merchants (id),
    CONSTRAINT ck_transfers_idempotency_key CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    CONSTRAINT ck_transfers_distinct_merchants CHECK (from_merchant_id <> to_merchant_id),
    CONSTRAINT ck_transfers_amount_positive CHECK (amount > 0),
    CONSTRAINT ck_transfers_fee_not_negative CHECK (fee >= 0),
    CONSTRAINT ck_transfers_percent_fee_range CHECK (percent_fee BETWEEN 0 AND 100),
    CONSTRAINT ck_transfers_currency_code CHECK (currency ~ '^[A-Z0-9]{3,10}$'),
    CONSTRAINT ck_transfers_state CHECK (state IN ('pending', 'completed', 'failed')),
    CONSTRAINT ck_transfers_failure_reason
        CHECK ((state = 'failed') = (failure_reason IS NOT NULL)),
    CONSTRAINT ck_transfers_processed CHECK ((state = 'pending') = (processed IS NULL))
);
CREATE INDEX ix_transfers_created_id ON transfers (created DESC, id DESC);
CREATE INDEX ix_transfers_from_created_id ON transfers (from_merchant_id, created DESC, id DESC);
CREATE INDEX ix_transfers_to_created_id ON transfers (to_merchant_id, created DESC, id DESC);
CREATE INDEX ix_transfers_pending_enqueued ON transfers (enqueued) WHERE state = 'pending';

-- A final state never changes, and nothing but the state of a transfer ever changes.
CREATE FUNCTION transfers_guard_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'pending' THEN
        RAISE EXCEPTION 'transfer % is final (%): it cannot change', OLD.id, OLD.state
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.idempotency_key, NEW.request_fingerprint, NEW.from_merchant_id,
        NEW.to_merchant_id, NEW.amount, NEW.fee, NEW.percent_fee, NEW.currency, NEW.created)
       IS DISTINCT FROM
       (OLD.id, OLD.idempotency_key, OLD.request_fingerprint, OLD.from_merchant_id,
        OLD.to_merchant_id, OLD.amount, OLD.fee, OLD.percent_fee, OLD.currency, OLD.created) THEN
        RAISE EXCEPTION 'transfer % is immutable but for its state', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER transfers_guard_final_state BEFORE UPDATE ON transfers
    FOR EACH ROW EXECUTE FUNCTION transfers_guard_final_state();
CREATE FUNCTION transfers_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transfers are never deleted' USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER transfers_refuse_delete BEFORE DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION transfers_refuse_delete();

CREATE TABLE entries (
    id bigint GENERATED ALWAYS AS IDENTITY,
    movement_id uuid NOT NULL,
    transfer_id uuid,
    account_id uuid NOT NULL,
    amount numeric(38, 8) NOT NULL,
    balance_after numeric(38, 8) NOT NULL,
    account_version bigint NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_entries PRIMARY KEY (id),
    CONSTRAINT fk_entries_transfer_id_transfers
        FOREIGN KEY (transfer_id) REFERENCES transfers (id),
    CONSTRAINT fk_entries_account_id_accounts FOREIGN KEY (account_id) REFERENCES accounts (id),
    CONSTRAINT ck_entries_amount_not_zero CHECK (amount <> 0),
    CONSTRAINT ck_entries_movement CHECK (transfer_id IS NULL OR transfer_id = movement_id)
);
CREATE UNIQUE INDEX uq_entries_account_version ON entries (account_id, account_version);
CREATE INDEX ix_entries_movement_id ON entries (movement_id);

-- The journal is append-only.
CREATE FUNCTION entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journal entries are immutable'
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER entries_refuse_change BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_refuse_change();
"""

DOWNGRADE = """
DROP TABLE entries;
DROP FUNCTION entries_refuse_change();
DROP TABLE transfers;
DROP FUNCTION transfers_guard_final_state();
DROP FUNCTION transfers_refuse_delete();
DROP TABLE accounts;
DROP TABLE merchants;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
