"""Every table of the ledger, as SQLAlchemy Core `Table`s on one `MetaData`.

The rules money depends on live here as constraints, so the database refuses what the code
must never do: a negative balance, a second transfer for one Idempotency-Key, a posting of zero.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# 38 digits with 8 decimals: 30 integer digits, beyond SPEC's "at least 28".
Money = Numeric(38, 8)
Percent = Numeric(5, 2)
# 1 BASE = rate QUOTE: 12 decimal places.
Rate = Numeric(30, 12)
CURRENCY_PATTERN = "^[A-Z0-9]{3,10}$"


def _created() -> Column[object]:
    return Column("created", DateTime(timezone=True), nullable=False, server_default=func.now())


merchants = Table(
    "merchants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("percent_fee", Percent, nullable=False),
    _created(),
    Column("updated", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("archived", Boolean, nullable=False, server_default=text("false")),
    # Volume fee tiers ([{"from_volume", "percent_fee"}, ...], validated by the domain); NULL:
    # the flat `percent_fee`.
    Column("fee_tiers", JSONB, nullable=True),
    CheckConstraint("char_length(name) BETWEEN 1 AND 64", name="name_length"),
    CheckConstraint("percent_fee BETWEEN 0 AND 100", name="percent_fee_range"),
    CheckConstraint("jsonb_typeof(fee_tiers) = 'array'", name="fee_tiers_array"),
)

# A cap on what a balance may be debited per UTC day or month (transfers and withdrawals).
balance_limits = Table(
    "balance_limits",
    metadata,
    Column("merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), primary_key=True),
    Column("currency", String(10), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("max_amount", Money, nullable=False),
    CheckConstraint(f"currency ~ '{CURRENCY_PATTERN}'", name="currency_code"),
    CheckConstraint("period IN ('day', 'month')", name="period"),
    CheckConstraint("max_amount > 0", name="max_amount_positive"),
)

# Running totals of a merchant's balance per UTC day, kept by the worker in the transaction that
# completes a movement: `debited` (amount + fee of transfers and withdrawals completed that day:
# limits) and `sent` (amount of transfers recorded that day that completed: volume fee tiers).
balance_totals = Table(
    "balance_totals",
    metadata,
    Column("merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), primary_key=True),
    Column("currency", String(10), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("debited", Money, nullable=False, server_default=text("0")),
    Column("sent", Money, nullable=False, server_default=text("0")),
    CheckConstraint("debited >= 0", name="debited_not_negative"),
    CheckConstraint("sent >= 0", name="sent_not_negative"),
)

# One table for every account of the ledger: a merchant's balance in one currency, a fee
# (revenue) account shard, the issuance account that money is brought in from, or the FX
# account (the platform's position in a currency that conversions move through).
accounts = Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    Column("currency", String(10), nullable=False),
    Column("shard", SmallInteger, nullable=True),
    Column("amount", Money, nullable=False),
    # Number of journal entries on this account; entries carry it, so history is linear.
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    _created(),
    CheckConstraint("kind IN ('merchant', 'fee', 'issuance', 'fx')", name="kind"),
    CheckConstraint(f"currency ~ '{CURRENCY_PATTERN}'", name="currency_code"),
    # The issuance account mirrors money brought in, the FX account the platform's position:
    # the only ones that go negative.
    CheckConstraint("kind IN ('issuance', 'fx') OR amount >= 0", name="amount_not_negative"),
    CheckConstraint("(kind = 'merchant') = (merchant_id IS NOT NULL)", name="merchant_owner"),
    CheckConstraint("(kind = 'fee') = (shard IS NOT NULL)", name="fee_shard"),
    Index(
        "uq_accounts_merchant_currency",
        "merchant_id",
        "currency",
        unique=True,
        postgresql_where=text("kind = 'merchant'"),
    ),
    Index(
        "uq_accounts_fee_currency_shard",
        "currency",
        "shard",
        unique=True,
        postgresql_where=text("kind = 'fee'"),
    ),
    Index(
        "uq_accounts_issuance_currency",
        "currency",
        unique=True,
        postgresql_where=text("kind = 'issuance'"),
    ),
    Index("uq_accounts_fx_currency", "currency", unique=True, postgresql_where=text("kind = 'fx'")),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # The owner scope of the key: the submitting key's merchant, or NULL for the platform.
    Column("idempotency_scope", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    Column("idempotency_key", String(255), nullable=False),
    Column("request_fingerprint", String(64), nullable=False),
    Column("kind", String(16), nullable=False, server_default=text("'transfer'")),
    # NULL for a deposit (money from outside) and a withdrawal (money paid out) respectively.
    Column("from_merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    Column("to_merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    # A reversal's original transfer.
    Column("reverses", UUID(as_uuid=True), ForeignKey("transfers.id"), nullable=True),
    # On a `transfer`: the amount and fee its completed reversals gave back (NULL on other
    # kinds). The only columns of a final transfer that change: the trigger lets them grow.
    Column("reversed_amount", Money, nullable=True, server_default=text("0")),
    Column("reversed_fee", Money, nullable=True, server_default=text("0")),
    Column("amount", Money, nullable=False),
    Column("fee", Money, nullable=False),
    Column("percent_fee", Percent, nullable=False),
    Column("currency", String(10), nullable=False),
    # A cross-currency transfer: the receiver's currency, the rate snapshotted at submission and
    # what the receiver gets, trunc(amount x fx_rate, 8). NULL for same-currency and other kinds.
    Column("to_currency", String(10), nullable=True),
    Column("fx_rate", Rate, nullable=True),
    Column("converted_amount", Money, nullable=True),
    Column("state", String(16), nullable=False, server_default=text("'pending'")),
    Column("failure_reason", Text, nullable=True),
    _created(),
    Column("processed", DateTime(timezone=True), nullable=True),
    # When it was last handed to the queue; the sweeper re-enqueues what has waited too long.
    Column("enqueued", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The request id of the submission, so the worker's log lines carry it too.
    Column("request_id", String(64), nullable=True),
    # Times applying it raised (a bug, not a business refusal); bounded, then it fails.
    Column("apply_failures", SmallInteger, nullable=False, server_default=text("0")),
    CheckConstraint("idempotency_key ~ '^[\\x21-\\x7e]{1,255}$'", name="idempotency_key"),
    CheckConstraint("from_merchant_id <> to_merchant_id", name="distinct_merchants"),
    CheckConstraint("kind IN ('transfer', 'deposit', 'withdrawal', 'reversal')", name="kind"),
    CheckConstraint(
        "(from_merchant_id IS NULL) = (kind = 'deposit')"
        " AND (to_merchant_id IS NULL) = (kind = 'withdrawal')",
        name="parties",
    ),
    CheckConstraint("(kind = 'reversal') = (reverses IS NOT NULL)", name="reverses"),
    CheckConstraint(
        "(kind = 'transfer') = (reversed_amount IS NOT NULL)"
        " AND (kind = 'transfer') = (reversed_fee IS NOT NULL)"
        " AND reversed_amount BETWEEN 0 AND amount AND reversed_fee BETWEEN 0 AND fee",
        name="reversed",
    ),
    CheckConstraint(
        "kind NOT IN ('deposit', 'withdrawal') OR (fee = 0 AND percent_fee = 0)",
        name="feeless_kinds",
    ),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("fee >= 0", name="fee_not_negative"),
    CheckConstraint("percent_fee BETWEEN 0 AND 100", name="percent_fee_range"),
    CheckConstraint(f"currency ~ '{CURRENCY_PATTERN}'", name="currency_code"),
    CheckConstraint(
        "(to_currency IS NULL) = (fx_rate IS NULL)"
        " AND (to_currency IS NULL) = (converted_amount IS NULL)",
        name="fx_fields",
    ),
    CheckConstraint("to_currency IS NULL OR kind = 'transfer'", name="fx_kind"),
    CheckConstraint(f"to_currency ~ '{CURRENCY_PATTERN}'", name="to_currency_code"),
    CheckConstraint("to_currency <> currency", name="fx_distinct_currencies"),
    CheckConstraint("fx_rate > 0", name="fx_rate_positive"),
    CheckConstraint(
        "converted_amount > 0 AND converted_amount = trunc(amount * fx_rate, 8)",
        name="converted_amount",
    ),
    CheckConstraint("state IN ('pending', 'completed', 'failed')", name="state"),
    CheckConstraint("(state = 'failed') = (failure_reason IS NOT NULL)", name="failure_reason"),
    CheckConstraint("(state = 'pending') = (processed IS NULL)", name="processed"),
    CheckConstraint("apply_failures >= 0", name="apply_failures"),
    UniqueConstraint("idempotency_scope", "idempotency_key", postgresql_nulls_not_distinct=True),
    Index("ix_transfers_created_id", text("created DESC"), text("id DESC")),
    Index(
        "ix_transfers_from_created_id", "from_merchant_id", text("created DESC"), text("id DESC")
    ),
    Index("ix_transfers_to_created_id", "to_merchant_id", text("created DESC"), text("id DESC")),
    Index("ix_transfers_pending_enqueued", "enqueued", postgresql_where=text("state = 'pending'")),
    Index("ix_transfers_reverses", "reverses", postgresql_where=text("reverses IS NOT NULL")),
)

# The journal: append-only (a trigger refuses UPDATE and DELETE). A movement (a transfer, or a
# deposit that opens a balance) is a set of entries that sums to zero.
entries = Table(
    "entries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("movement_id", UUID(as_uuid=True), nullable=False),
    Column("transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id"), nullable=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("amount", Money, nullable=False),
    Column("balance_after", Money, nullable=False),
    Column("account_version", BigInteger, nullable=False),
    # Stamped when written, under the account's row lock: time order = version order.
    Column(
        "created", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
    ),
    CheckConstraint("amount <> 0", name="amount_not_zero"),
    CheckConstraint("transfer_id IS NULL OR transfer_id = movement_id", name="movement"),
    Index("uq_entries_account_version", "account_id", "account_version", unique=True),
)

batches = Table(
    "batches",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    _created(),
    Column("accepted", Integer, nullable=False),
    Column("refused", Integer, nullable=False),
    # The merchant whose key created the batch; NULL for an admin key.
    Column("owner_merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    CheckConstraint("accepted >= 0 AND refused >= 0", name="counts"),
)

# Every transfer a batch accepted, created by it or replayed from an earlier request.
batch_items = Table(
    "batch_items",
    metadata,
    Column("batch_id", UUID(as_uuid=True), ForeignKey("batches.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id"), nullable=False),
    CheckConstraint("position >= 0", name="position"),
)

# API keys: the secret itself is never stored, only its SHA-256.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    Column("scope", String(8), nullable=False),
    Column("rate_limit", String(32), nullable=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    _created(),
    Column("revoked", DateTime(timezone=True), nullable=True),
    CheckConstraint("scope IN ('write', 'read')", name="scope"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 64", name="name_length"),
    CheckConstraint("rate_limit ~ '^[1-9][0-9]{0,8}/(second|minute)$'", name="rate_limit"),
)

# FX rates: 1 BASE = rate QUOTE, one per ordered pair (no inverse is implied).
fx_rates = Table(
    "fx_rates",
    metadata,
    Column("base", String(10), primary_key=True),
    Column("quote", String(10), primary_key=True),
    Column("rate", Rate, nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"base ~ '{CURRENCY_PATTERN}'", name="base_code"),
    CheckConstraint(f"quote ~ '{CURRENCY_PATTERN}'", name="quote_code"),
    CheckConstraint("base <> quote", name="distinct_currencies"),
    CheckConstraint("rate > 0", name="rate_positive"),
)

# Webhooks (migration 0009): endpoints, the outbox of events (written by a trigger on
# `transfers` in the transaction that makes a transfer final), deliveries and their attempts.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("merchant_id", UUID(as_uuid=True), ForeignKey("merchants.id"), nullable=True),
    Column("url", String(2048), nullable=False),
    Column("events", ARRAY(String(32)), nullable=False),
    Column("description", String(500), nullable=True),
    Column("signing_key", LargeBinary, nullable=False),
    _created(),
    Column("deleted", DateTime(timezone=True), nullable=True),
    CheckConstraint(
        "cardinality(events) > 0"
        " AND events <@ ARRAY['transfer.completed', 'transfer.failed']::varchar(32)[]",
        name="events",
    ),
    CheckConstraint("url ~ '^https?://'", name="url"),
    CheckConstraint("octet_length(signing_key) = 32", name="signing_key"),
    Index("ix_webhook_endpoints_merchant_id", "merchant_id"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("transfer_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=True),
    Column("dispatched", DateTime(timezone=True), nullable=True),
    CheckConstraint("type IN ('transfer.completed', 'transfer.failed')", name="type"),
    Index(
        "ix_webhook_events_undispatched",
        "created",
        postgresql_where=text("dispatched IS NULL"),
    ),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("endpoint_id", UUID(as_uuid=True), ForeignKey("webhook_endpoints.id"), primary_key=True),
    Column("event_id", UUID(as_uuid=True), ForeignKey("webhook_events.id"), primary_key=True),
    Column("event_created", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt", DateTime(timezone=True), nullable=True),
    Column("lease", UUID(as_uuid=True), nullable=True),
    Column("delivered", DateTime(timezone=True), nullable=True),
    CheckConstraint("state IN ('pending', 'delivered', 'failed', 'cancelled')", name="state"),
    CheckConstraint("(state = 'pending') = (next_attempt IS NOT NULL)", name="next_attempt"),
    CheckConstraint("attempts >= 0", name="attempts"),
    Index("ix_webhook_deliveries_due", "next_attempt", postgresql_where=text("state = 'pending'")),
    Index(
        "ix_webhook_deliveries_undelivered",
        "event_created",
        postgresql_where=text("state = 'pending'"),
    ),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("endpoint_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("attempted", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("delivered", Boolean, nullable=False),
    Column("next_attempt", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(
        ["endpoint_id", "event_id"],
        ["webhook_deliveries.endpoint_id", "webhook_deliveries.event_id"],
        name="fk_webhook_attempts_endpoint_id_webhook_deliveries",
    ),
    CheckConstraint("(status_code IS NULL) <> (error IS NULL)", name="outcome"),
    Index(
        "ix_webhook_attempts_endpoint_id_attempted_id",
        "endpoint_id",
        text("attempted DESC"),
        text("id DESC"),
    ),
)
