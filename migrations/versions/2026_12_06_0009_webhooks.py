"""Webhooks: endpoints, the outbox of events, deliveries and their attempts.

The outbox is written by the database itself: a statement-level trigger on `transfers` inserts
one `webhook_events` row for every transfer whose state went from `pending` to a final state in
that statement, in the statement's own transaction. Every path that finalises transfers (a single
transfer, a drained group, a bulk group, the sweep's groups, the apply-failure give-up) goes
through an UPDATE of `transfers`, so each one writes its events with its final states, and a
path added later does too. One multi-row INSERT per statement, from the statement's transition
tables; an UPDATE that finalises nothing (the sweep's re-enqueue, a reversal total) inserts
nothing. `uq_webhook_events_transfer_id` makes "one event per final state" a constraint: a final
state never changes (`transfers_guard_final_state`), so a transfer has at most one.

An event carries no body when written: a worker renders the transfer (the API's renderer) when it
first hands the event out to endpoints, and stores the body there, so every endpoint and every
retry gets the same bytes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Where events go. `merchant_id` NULL: the platform's (admin) endpoint, every merchant's events;
-- else the events of transfers that merchant sends or receives. `signing_key` is the secret's
-- 32 bytes (it must sign, so it cannot be a hash). Deleted endpoints stay, for their log.
CREATE TABLE webhook_endpoints (
    id uuid NOT NULL,
    merchant_id uuid,
    url varchar(2048) NOT NULL,
    events varchar(32)[] NOT NULL,
    description varchar(500),
    signing_key bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    deleted timestamptz,
    CONSTRAINT pk_webhook_endpoints PRIMARY KEY (id),
    CONSTRAINT fk_webhook_endpoints_merchant_id_merchants
        FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT ck_webhook_endpoints_events CHECK (
        cardinality(events) > 0
        AND events <@ ARRAY['transfer.completed', 'transfer.failed']::varchar(32)[]
    ),
    CONSTRAINT ck_webhook_endpoints_url CHECK (url ~ '^https?://'),
    CONSTRAINT ck_webhook_endpoints_signing_key CHECK (octet_length(signing_key) = 32)
);
CREATE INDEX ix_webhook_endpoints_merchant_id ON webhook_endpoints (merchant_id);

-- The outbox: one event per transfer that reached a final state. `created` is that moment
-- (the transfer's `processed`); `dispatched` when a worker fanned it out to the endpoints
-- then matching it, rendering `body` once for all of them.
CREATE TABLE webhook_events (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    transfer_id uuid NOT NULL,
    type varchar(32) NOT NULL,
    created timestamptz NOT NULL,
    body text,
    dispatched timestamptz,
    CONSTRAINT pk_webhook_events PRIMARY KEY (id),
    CONSTRAINT uq_webhook_events_transfer_id UNIQUE (transfer_id),
    CONSTRAINT ck_webhook_events_type CHECK (type IN ('transfer.completed', 'transfer.failed'))
);
CREATE INDEX ix_webhook_events_undispatched ON webhook_events (created)
    WHERE dispatched IS NULL;

-- One event to one endpoint. `pending` until a 2xx (`delivered`) or the schedule runs out
-- (`failed`); `cancelled` when its endpoint is deleted. While pending, `next_attempt` is when
-- it is due; a worker sending it holds `lease` (its claim) and pushes `next_attempt` past the
-- send's timeout, so a worker that dies mid-send leaves it due again, never lost.
CREATE TABLE webhook_deliveries (
    endpoint_id uuid NOT NULL,
    event_id uuid NOT NULL,
    event_created timestamptz NOT NULL,
    state varchar(16) NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt timestamptz,
    lease uuid,
    delivered timestamptz,
    CONSTRAINT pk_webhook_deliveries PRIMARY KEY (endpoint_id, event_id),
    CONSTRAINT fk_webhook_deliveries_endpoint_id_webhook_endpoints
        FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints (id),
    CONSTRAINT fk_webhook_deliveries_event_id_webhook_events
        FOREIGN KEY (event_id) REFERENCES webhook_events (id),
    CONSTRAINT ck_webhook_deliveries_state
        CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    CONSTRAINT ck_webhook_deliveries_next_attempt
        CHECK ((state = 'pending') = (next_attempt IS NOT NULL)),
    CONSTRAINT ck_webhook_deliveries_attempts CHECK (attempts >= 0)
);
CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt)
    WHERE state = 'pending';
CREATE INDEX ix_webhook_deliveries_undelivered ON webhook_deliveries (event_created)
    WHERE state = 'pending';

-- Every attempt, for the deliveries log (newest first per endpoint).
CREATE TABLE webhook_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY,
    endpoint_id uuid NOT NULL,
    event_id uuid NOT NULL,
    attempted timestamptz NOT NULL,
    status_code integer,
    error varchar(500),
    delivered boolean NOT NULL,
    next_attempt timestamptz,
    CONSTRAINT pk_webhook_attempts PRIMARY KEY (id),
    CONSTRAINT fk_webhook_attempts_endpoint_id_webhook_deliveries
        FOREIGN KEY (endpoint_id, event_id)
        REFERENCES webhook_deliveries (endpoint_id, event_id),
    CONSTRAINT ck_webhook_attempts_outcome CHECK ((status_code IS NULL) <> (error IS NULL))
);
CREATE INDEX ix_webhook_attempts_endpoint_id_attempted_id
    ON webhook_attempts (endpoint_id, attempted DESC, id DESC);

-- The outbox's writer: one INSERT per statement, for the transfers it made final.
CREATE FUNCTION transfers_record_final_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (transfer_id, type, created)
    SELECT after.id, 'transfer.' || after.state, after.processed
    FROM transfers_after AS after
    JOIN transfers_before AS before ON before.id = after.id
    WHERE before.state = 'pending' AND after.state <> 'pending';
    RETURN NULL;
END $$;
CREATE TRIGGER transfers_record_final_events AFTER UPDATE ON transfers
    REFERENCING OLD TABLE AS transfers_before NEW TABLE AS transfers_after
    FOR EACH STATEMENT EXECUTE FUNCTION transfers_record_final_events();
"""

DOWNGRADE = r"""
DROP TRIGGER transfers_record_final_events ON transfers;
DROP FUNCTION transfers_record_final_events();
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_events;
DROP TABLE webhook_endpoints;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
