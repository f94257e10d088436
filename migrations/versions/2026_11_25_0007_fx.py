"""Cross-currency transfers: FX rates, a transfer's snapshot of its conversion, FX accounts.

`fx_rates` holds one rate per ordered pair (1 BASE = rate QUOTE; no inverse is implied). A
`transfer` may name a `to_currency`: it then snapshots the rate it was submitted with and the
amount its receiver gets, `converted_amount = trunc(amount × fx_rate, 8)`, which the database
checks itself. Existing rows are same-currency transfers: all three columns NULL. The columns
are immutable like the rest of a transfer.

Each currency gets one `fx` account (the platform's position in it, which may go negative): a
conversion credits the FX account of the sender's currency with the amount and debits the FX
account of the receiver's currency with the converted amount, so every currency stays
conserved.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Migration 0006's version of the trigger, restored on downgrade.
_GUARD_0006 = """
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
"""

UPGRADE = r"""
-- 1 BASE = rate QUOTE, for one ordered pair; the inverse pair is a rate of its own.
CREATE TABLE fx_rates (
    base varchar(10) NOT NULL,
    quote varchar(10) NOT NULL,
    rate numeric(30, 12) NOT NULL,
    updated timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_fx_rates PRIMARY KEY (base, quote),
    CONSTRAINT ck_fx_rates_base_code CHECK (base ~ '^[A-Z0-9]{3,10}$'),
    CONSTRAINT ck_fx_rates_quote_code CHECK (quote ~ '^[A-Z0-9]{3,10}$'),
    CONSTRAINT ck_fx_rates_distinct_currencies CHECK (base <> quote),
    CONSTRAINT ck_fx_rates_rate_positive CHECK (rate > 0)
);

-- One statement: the table is scanned once for all the new constraints (every row passes:
-- the new columns are NULL on every existing transfer).
ALTER TABLE transfers
    ADD COLUMN to_currency varchar(10),
    ADD COLUMN fx_rate numeric(30, 12),
    ADD COLUMN converted_amount numeric(38, 8),
    ADD CONSTRAINT ck_transfers_fx_fields CHECK (
        (to_currency IS NULL) = (fx_rate IS NULL)
        AND (to_currency IS NULL) = (converted_amount IS NULL)
    ),
    ADD CONSTRAINT ck_transfers_fx_kind CHECK (to_currency IS NULL OR kind = 'transfer'),
    ADD CONSTRAINT ck_transfers_to_currency_code CHECK (to_currency ~ '^[A-Z0-9]{3,10}$'),
    ADD CONSTRAINT ck_transfers_fx_distinct_currencies CHECK (to_currency <> currency),
    ADD CONSTRAINT ck_transfers_fx_rate_positive CHECK (fx_rate > 0),
    ADD CONSTRAINT ck_transfers_converted_amount CHECK (
        converted_amount > 0 AND converted_amount = trunc(amount * fx_rate, 8)
    );

-- A final state never changes; a completed transfer's reversal totals only grow; a
-- conversion's snapshot never changes.
CREATE OR REPLACE FUNCTION transfers_guard_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.idempotency_scope, NEW.idempotency_key, NEW.request_fingerprint,
        NEW.kind, NEW.reverses, NEW.from_merchant_id, NEW.to_merchant_id, NEW.amount,
        NEW.percent_fee, NEW.currency, NEW.to_currency, NEW.fx_rate, NEW.converted_amount,
        NEW.created)
       IS DISTINCT FROM
       (OLD.id, OLD.idempotency_scope, OLD.idempotency_key, OLD.request_fingerprint,
        OLD.kind, OLD.reverses, OLD.from_merchant_id, OLD.to_merchant_id, OLD.amount,
        OLD.percent_fee, OLD.currency, OLD.to_currency, OLD.fx_rate, OLD.converted_amount,
        OLD.created) THEN
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

-- One FX account per currency: the platform's position, which may go negative (as the
-- issuance account does).
ALTER TABLE accounts
    DROP CONSTRAINT ck_accounts_kind,
    DROP CONSTRAINT ck_accounts_amount_not_negative,
    ADD CONSTRAINT ck_accounts_kind CHECK (kind IN ('merchant', 'fee', 'issuance', 'fx')),
    ADD CONSTRAINT ck_accounts_amount_not_negative
        CHECK (kind IN ('issuance', 'fx') OR amount >= 0);
CREATE UNIQUE INDEX uq_accounts_fx_currency ON accounts (currency) WHERE kind = 'fx';
"""

DOWNGRADE = (
    _GUARD_0006
    + """
DROP INDEX uq_accounts_fx_currency;
ALTER TABLE accounts
    DROP CONSTRAINT ck_accounts_kind,
    DROP CONSTRAINT ck_accounts_amount_not_negative,
    ADD CONSTRAINT ck_accounts_kind CHECK (kind IN ('merchant', 'fee', 'issuance')),
    ADD CONSTRAINT ck_accounts_amount_not_negative CHECK (kind = 'issuance' OR amount >= 0);
ALTER TABLE transfers
    DROP CONSTRAINT ck_transfers_converted_amount,
    DROP CONSTRAINT ck_transfers_fx_rate_positive,
    DROP CONSTRAINT ck_transfers_fx_distinct_currencies,
    DROP CONSTRAINT ck_transfers_to_currency_code,
    DROP CONSTRAINT ck_transfers_fx_kind,
    DROP CONSTRAINT ck_transfers_fx_fields,
    DROP COLUMN converted_amount,
    DROP COLUMN fx_rate,
    DROP COLUMN to_currency;
DROP TABLE fx_rates;
"""
)


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
