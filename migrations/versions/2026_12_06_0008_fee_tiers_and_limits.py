"""Volume fee tiers and daily/monthly limits: a merchant's tiers, its balances' limits, and the
per-balance, per-UTC-day running totals both read instead of summing history.

`balance_totals` holds, for one merchant's balance (merchant, currency) and one UTC day:
- `debited`: amount + fee debited by `transfer` and `withdrawal` movements that *completed* that
  day (limits: a day's usage is one row, a month's at most 31);
- `sent`: the amount of `transfer` movements *recorded* (created) that day that completed
  (volume: with the sender's pending transfers, a month's volume).
The worker adds to them in the transaction that completes the movement, under the balance's
lock; existing history is summed into them here, so they agree with the journal from the start.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE merchants
    ADD COLUMN fee_tiers jsonb,
    ADD CONSTRAINT ck_merchants_fee_tiers_array CHECK (jsonb_typeof(fee_tiers) = 'array');

CREATE TABLE balance_limits (
    merchant_id uuid NOT NULL,
    currency varchar(10) NOT NULL,
    period varchar(8) NOT NULL,
    max_amount numeric(38, 8) NOT NULL,
    CONSTRAINT pk_balance_limits PRIMARY KEY (merchant_id, currency, period),
    CONSTRAINT fk_balance_limits_merchant_id_merchants
        FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT ck_balance_limits_currency_code CHECK (currency ~ '^[A-Z0-9]{3,10}$'),
    CONSTRAINT ck_balance_limits_period CHECK (period IN ('day', 'month')),
    CONSTRAINT ck_balance_limits_max_amount_positive CHECK (max_amount > 0)
);

CREATE TABLE balance_totals (
    merchant_id uuid NOT NULL,
    currency varchar(10) NOT NULL,
    day date NOT NULL,
    debited numeric(38, 8) NOT NULL DEFAULT 0,
    sent numeric(38, 8) NOT NULL DEFAULT 0,
    CONSTRAINT pk_balance_totals PRIMARY KEY (merchant_id, currency, day),
    CONSTRAINT fk_balance_totals_merchant_id_merchants
        FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT ck_balance_totals_debited_not_negative CHECK (debited >= 0),
    CONSTRAINT ck_balance_totals_sent_not_negative CHECK (sent >= 0)
);

INSERT INTO balance_totals (merchant_id, currency, day, debited, sent)
SELECT merchant_id, currency, day, sum(debited), sum(sent)
FROM (
    SELECT from_merchant_id, currency, (processed AT TIME ZONE 'UTC')::date, amount + fee, 0
    FROM transfers
    WHERE state = 'completed' AND kind IN ('transfer', 'withdrawal')
    UNION ALL
    SELECT from_merchant_id, currency, (created AT TIME ZONE 'UTC')::date, 0, amount
    FROM transfers
    WHERE state = 'completed' AND kind = 'transfer'
) AS moved (merchant_id, currency, day, debited, sent)
GROUP BY merchant_id, currency, day;
"""

DOWNGRADE = """
DROP TABLE balance_totals;
DROP TABLE balance_limits;
ALTER TABLE merchants DROP COLUMN fee_tiers;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
