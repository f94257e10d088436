"""API keys, and idempotency scoped per key owner.

Existing transfers and batches belong to the platform scope (NULL): every key they were
submitted with stays valid and keeps naming the same transfer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
-- A key's secret is never stored: only its SHA-256 (the secret has 256 random bits).
CREATE TABLE api_keys (
    id uuid NOT NULL,
    name varchar(64) NOT NULL,
    merchant_id uuid,
    scope varchar(8) NOT NULL,
    rate_limit varchar(32),
    secret_hash varchar(64) NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    revoked timestamptz,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT uq_api_keys_secret_hash UNIQUE (secret_hash),
    CONSTRAINT fk_api_keys_merchant_id_merchants
        FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT ck_api_keys_scope CHECK (scope IN ('write', 'read')),
    CONSTRAINT ck_api_keys_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
    CONSTRAINT ck_api_keys_rate_limit CHECK (rate_limit ~ '^[1-9][0-9]{0,8}/(second|minute)$')
);

-- One scope per merchant (all of its keys), and the platform's (NULL) for admin keys: the same
-- Idempotency-Key in two scopes names two transfers. NULLS NOT DISTINCT makes the platform one
-- scope, as the single unique key was before.
ALTER TABLE transfers ADD COLUMN idempotency_scope uuid;
ALTER TABLE transfers ADD CONSTRAINT fk_transfers_idempotency_scope_merchants
    FOREIGN KEY (idempotency_scope) REFERENCES merchants (id);
ALTER TABLE transfers ADD CONSTRAINT uq_transfers_idempotency_scope_idempotency_key
    UNIQUE NULLS NOT DISTINCT (idempotency_scope, idempotency_key);
ALTER TABLE transfers DROP CONSTRAINT uq_transfers_idempotency_key;

-- The merchant whose key created a batch (NULL: an admin key).
ALTER TABLE batches ADD COLUMN owner_merchant_id uuid;
ALTER TABLE batches ADD CONSTRAINT fk_batches_owner_merchant_id_merchants
    FOREIGN KEY (owner_merchant_id) REFERENCES merchants (id);

-- The scope joins what never changes on a transfer.
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

DOWNGRADE = """
CREATE OR REPLACE FUNCTION transfers_guard_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
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
ALTER TABLE batches DROP COLUMN owner_merchant_id;
ALTER TABLE transfers ADD CONSTRAINT uq_transfers_idempotency_key UNIQUE (idempotency_key);
ALTER TABLE transfers DROP COLUMN idempotency_scope;
DROP TABLE api_keys;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
