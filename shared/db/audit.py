"""The ledger check: SPEC's invariants, read back from the database.

Every query counts what breaks one or more rules; a healthy ledger has zero everywhere.

Fast on a big ledger (SPEC: 1,000,000 transfers, ~3M entries, within 10 s): each big table is
read in one pass into hash aggregates of few groups (or in an index's order), never sorted and
never joined with itself or with another big table. Two rules relate rows to other rows, and
read literally they would need a sort or a join of the whole journal (seconds each), so they are
first compared as checksums — sums of 64-bit hashes, exact and in no particular order:

- a balance's history: every entry turns the state (version − 1, balance_after − amount) into
  (version, balance_after), so per account Σ hash(state before) + hash(last state) equals
  Σ hash(state after) + hash(0, 0) exactly when each entry continues the one before it;
- a movement's postings: Σ seed(account) × hash(movement, amount) over the journal equals the
  same over the postings the completed transfers call for (`_EXPECTED_POSTINGS`), per currency,
  and so do the counts, exactly when every completed movement has exactly its postings.

A broken ledger matches a checksum only by a 64-bit hash coincidence. When one does not match,
exact queries then count the entries or movements that break the rule: slower, and run only
then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from shared.domain.money import add_amounts, negate


def _hash_numeric(value: str, negative: str) -> str:
    """PostgreSQL's hash of a numeric leaves its sign out (x and −x hash alike) and only XORs
    its weight in (1 and 10000 hash one bit apart): the sign goes in as the seed here, and
    every caller hashes the result once more, with the rest of its key."""
    return f"hash_numeric_extended({value}, CASE WHEN {negative} THEN 1 ELSE 0 END)"


def _state_hash(version: str, balance: str, negative: str) -> str:
    """The hash of an account's state after `version` entries: (version, balance)."""
    return f"hashint8extended({version}, {_hash_numeric(balance, negative)})"


def _posting_hash(movement: str, amount: str) -> str:
    """The hash of a posting but its account: (movement, signed amount)."""
    seed = f"uuid_hash_extended({movement}, 0)"
    return f"hashint8extended({_hash_numeric(amount, f'{amount} < 0')}, {seed})"


# The postings checksum is Σ seed(account) × hash(movement, amount): the journal sums the hashes
# by account, then weighs each account's sum by its seed; the transfers weigh each posting they
# call for. An account's seed comes from what the account is, not from its id, so the transfers'
# side needs no lookup of accounts.
def _merchant_seed(merchant: str, currency: str) -> str:
    return f"uuid_hash_extended({merchant}, hashtextextended({currency}, 0))"


def _fee_seed(currency: str, shard: str) -> str:
    return f"hashtextextended({currency}, 1 + {shard})"


def _issuance_seed(currency: str) -> str:
    return f"hashtextextended({currency}, -1)"


def _fx_seed(currency: str) -> str:
    return f"hashtextextended({currency}, -2)"


_ACCOUNT_SEED = (
    f"CASE a.kind WHEN 'merchant' THEN {_merchant_seed('a.merchant_id', 'a.currency')}"
    f" WHEN 'fee' THEN {_fee_seed('a.currency', 'a.shard')}"
    f" WHEN 'fx' THEN {_fx_seed('a.currency')}"
    f" ELSE {_issuance_seed('a.currency')} END"
)


# What each transfer posts when it completes (SPEC "Movements"), with up to three legs, each a
# signed amount (NULL: the kind has no such leg) on an account:
# - the sender's balance: −(amount + fee) for a `transfer`, −amount for a withdrawal or reversal;
# - the receiver's balance: +amount, or +(amount + fee) for a reversal (the fee refunded), or
#   +converted_amount in `to_currency` for a cross-currency transfer (`receiver_currency`);
# - the house: the fee shard (`house_shard`) of the transfer's id +fee, or of the reversed
#   transfer's id −fee (the refund comes out of the shard that took the fee); the currency's
#   issuance account (no shard) −amount for a deposit, +amount for a withdrawal. A zero fee
#   posts nothing.
# A cross-currency transfer has two legs more (SPEC "FX"): the FX account of its currency
# +amount, and the FX account of its `to_currency` −converted_amount.
_EXPECTED_POSTINGS = """
    SELECT t.id, t.kind, t.state, t.currency, t.amount, t.fee, t.percent_fee,
           t.from_merchant_id, t.to_merchant_id, t.to_currency, t.fx_rate, t.converted_amount,
           t.created, t.processed, legs.*
    FROM transfers t
    CROSS JOIN LATERAL (
        SELECT CASE WHEN t.from_merchant_id IS NOT NULL
                    THEN -(t.amount + CASE WHEN t.kind = 'transfer' THEN t.fee ELSE 0 END)
               END AS sender_amount,
               CASE WHEN t.to_currency IS NOT NULL THEN t.converted_amount
                    WHEN t.to_merchant_id IS NOT NULL
                    THEN t.amount + CASE WHEN t.kind = 'reversal' THEN t.fee ELSE 0 END
               END AS receiver_amount,
               coalesce(t.to_currency, t.currency) AS receiver_currency,
               CASE WHEN t.to_currency IS NOT NULL THEN t.amount END AS fx_from_amount,
               CASE WHEN t.to_currency IS NOT NULL THEN -t.converted_amount END AS fx_to_amount,
               nullif(CASE t.kind WHEN 'transfer' THEN t.fee WHEN 'reversal' THEN -t.fee
                                  WHEN 'deposit' THEN -t.amount WHEN 'withdrawal' THEN t.amount
                      END, 0) AS house_amount,
               -- The fee shard is the id as a 128-bit integer modulo 16: its last hex digit.
               CASE WHEN t.kind IN ('transfer', 'reversal')
                    THEN get_byte(uuid_send(coalesce(t.reverses, t.id)), 15) % 16
               END AS house_shard
    ) legs
"""

# The transfers' side of the postings checksum: each leg's account seed × its hash. The FX legs
# are evaluated only for the transfers that convert.
_EXPECTED_POSTINGS_CHECKSUM = (
    f"coalesce({_merchant_seed('t.from_merchant_id', 't.currency')}::numeric"
    f" * {_posting_hash('t.id', 't.sender_amount')}, 0)"
    f" + coalesce({_merchant_seed('t.to_merchant_id', 't.receiver_currency')}::numeric"
    f" * {_posting_hash('t.id', 't.receiver_amount')}, 0)"
    f" + coalesce(CASE WHEN t.house_shard IS NULL THEN {_issuance_seed('t.currency')}"
    f" ELSE {_fee_seed('t.currency', 't.house_shard')} END::numeric"
    f" * {_posting_hash('t.id', 't.house_amount')}, 0)"
    f" + CASE WHEN t.to_currency IS NULL THEN 0"
    f" ELSE {_fx_seed('t.currency')}::numeric * {_posting_hash('t.id', 't.fx_from_amount')}"
    f" + {_fx_seed('t.to_currency')}::numeric * {_posting_hash('t.id', 't.fx_to_amount')} END"
)


# A balance's running totals of one UTC day, as a checksum: Σ hash(merchant, currency, day) ×
# value over the rows of `balance_totals` equals the same over the completed transfers they sum
# exactly when every (balance, day) sums right (but for a 64-bit hash coincidence).
def _day_key(merchant: str, currency: str, day: str) -> str:
    return f"hashint8extended({day} - DATE '2000-01-01', {_merchant_seed(merchant, currency)})"


def _utc_day(moment: str) -> str:
    return f"({moment} AT TIME ZONE 'UTC')::date"


_DEBITED_CHECKSUM = (
    _day_key("t.from_merchant_id", "t.currency", _utc_day("t.processed"))
    + "::numeric * (t.amount + t.fee)"
)
_SENT_CHECKSUM = (
    _day_key("t.from_merchant_id", "t.currency", _utc_day("t.created")) + "::numeric * t.amount"
)

_EXPECTED_POSTING_COUNT = (
    "(CASE WHEN {t}.sender_amount IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN {t}.receiver_amount IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN {t}.house_amount IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN {t}.to_currency IS NULL THEN 0 ELSE 2 END)"
)

# Each entry turns its account's state (version − 1, balance_after − amount) into (version,
# balance_after); a history starts at (0, 0) and ends at (last version, sum of the amounts).
_STATE_BEFORE = _state_hash(
    "account_version - 1", "balance_after - amount", "balance_after < amount"
)
_STATE_AFTER = _state_hash("account_version", "balance_after", "balance_after < 0")
_FIRST_STATE = _state_hash("0", "0", "false")
_LAST_STATE = _state_hash("j.last_version", "j.total", "j.total < 0")

# Per currency, from every account and the whole journal in one pass: invariant 1 (no negative
# balance but the issuance and FX accounts'), 2 (each balance and version equals its journal: sum,
# count, versions 1..n; each balance_after continues the entry before, as a checksum), and the
# journal's side of conservation and of the postings checksum. Entries on an account that does
# not exist land in the NULL currency and count as a balance that does not match.
_ACCOUNTS = text(
    f"""
    WITH journal AS (
        SELECT account_id,
               count(*) AS entries,
               min(account_version) AS first_version,
               max(account_version) AS last_version,
               sum(amount) AS total,
               sum(amount) FILTER (WHERE transfer_id IS NULL) AS initial,
               sum({_STATE_BEFORE}) AS before,
               sum({_STATE_AFTER}) AS after,
               sum({_posting_hash("movement_id", "amount")})
                   FILTER (WHERE transfer_id IS NOT NULL) AS postings,
               count(*) FILTER (WHERE transfer_id IS NOT NULL) AS posting_count
        FROM entries
        GROUP BY account_id
    )
    SELECT a.currency,
           count(*) FILTER (
               WHERE a.kind NOT IN ('issuance', 'fx') AND a.amount < 0
           ) AS negative_balances,
           count(*) FILTER (
               WHERE a.id IS NULL OR a.amount <> coalesce(j.total, 0)
                  OR a.version <> coalesce(j.entries, 0) OR a.version <> coalesce(j.last_version, 0)
                  OR j.first_version <> 1
           ) AS balances_not_matching_journal,
           coalesce(array_agg(j.account_id) FILTER (
               WHERE j.before + {_LAST_STATE} <> j.after + {_FIRST_STATE}
           ), '{{}}') AS broken_histories,
           coalesce(sum(a.amount) FILTER (WHERE a.kind <> 'issuance'), 0) AS held,
           coalesce(-sum(a.amount) FILTER (WHERE a.kind = 'issuance'), 0) AS issued,
           coalesce(sum(j.initial) FILTER (WHERE a.kind = 'merchant'), 0) AS brought_in,
           coalesce(sum({_ACCOUNT_SEED} * j.postings), 0) AS postings,
           coalesce(sum(j.posting_count), 0) AS posting_count,
           coalesce(sum(j.entries), 0) AS entries
    FROM accounts a
    FULL JOIN journal j ON j.account_id = a.id
    GROUP BY a.currency
    """
)

# A balance's initial amount is a movement without a transfer: the merchant's balance +x, the
# issuance account of its currency −x. Movements that are anything else.
_INITIAL_AMOUNTS = text(
    """
    SELECT count(*) FROM (
        SELECT count(*) = 2
               AND count(*) FILTER (WHERE a.kind = 'merchant' AND e.amount > 0) = 1
               AND count(*) FILTER (WHERE a.kind = 'issuance' AND e.amount < 0) = 1
               AND sum(e.amount) = 0 AND min(a.currency) = max(a.currency) AS regular
        FROM entries e
        LEFT JOIN accounts a ON a.id = e.account_id
        WHERE e.transfer_id IS NULL
        GROUP BY e.movement_id
    ) movement
    WHERE NOT coalesce(movement.regular, false)
    """
)

# Per currency, every transfer in one pass: counts, the fee rule of kind `transfer` (exact:
# amount × percent × 0.01 has at most 12 decimals, rounded half-up to 8 as SPEC says), the
# conversion rule of a cross-currency `transfer` (converted_amount = amount × fx_rate rounded
# down to 8 decimals, positive, into another currency; exact too), money brought in and taken
# out, and the transfers' side of the postings checksum (a cross-currency transfer's legs in
# `to_currency` counted with its `currency`: `_check_postings` compares the sums over all
# currencies).
_TRANSFERS = text(
    f"""
    SELECT t.currency,
           count(*) AS transfers,
           count(*) FILTER (WHERE t.state = 'pending') AS pending,
           count(*) FILTER (WHERE t.state = 'completed') AS completed,
           count(*) FILTER (
               WHERE t.kind = 'transfer' AND t.fee <> round(t.amount * t.percent_fee * 0.01, 8)
           ) AS fees_not_following_the_rule,
           count(*) FILTER (
               WHERE (t.to_currency IS NOT NULL OR t.fx_rate IS NOT NULL
                      OR t.converted_amount IS NOT NULL)
                 AND NOT coalesce(t.kind = 'transfer' AND t.to_currency <> t.currency
                                  AND t.converted_amount > 0
                                  AND t.converted_amount = trunc(t.amount * t.fx_rate, 8), false)
           ) AS conversions_not_following_the_rule,
           coalesce(sum(t.amount) FILTER (WHERE t.kind = 'deposit' AND t.state = 'completed'), 0)
               AS deposited,
           coalesce(
               sum(t.amount) FILTER (WHERE t.kind = 'withdrawal' AND t.state = 'completed'), 0
           ) AS withdrawn,
           coalesce(sum({_EXPECTED_POSTINGS_CHECKSUM}) FILTER (WHERE t.state = 'completed'), 0)
               AS postings,
           coalesce(sum({_EXPECTED_POSTING_COUNT.format(t="t")})
                    FILTER (WHERE t.state = 'completed'), 0) AS posting_count,
           coalesce(sum({_DEBITED_CHECKSUM}) FILTER (
               WHERE t.state = 'completed' AND t.kind IN ('transfer', 'withdrawal')
           ), 0) AS debited_checksum,
           coalesce(sum({_SENT_CHECKSUM}) FILTER (
               WHERE t.state = 'completed' AND t.kind = 'transfer'
           ), 0) AS sent_checksum
    FROM ({_EXPECTED_POSTINGS}) t
    GROUP BY t.currency
    """
)

# Every reversal gives back a completed `transfer`: from its receiver to its sender, in its
# currency. A transfer's reversal totals are those of its completed reversals, never above the
# transfer itself, and a transfer wholly reversed has returned its whole fee. Each completed
# reversal refunds the original's fee pro rata (fee × amount / original amount, half-up to 8
# decimals), except the one that completes the original, which refunds what is left of the fee,
# and none refunds more than is left (so, once rounding has refunded the whole fee, less).
# Without an order to read them in: per original, at most one refund above pro rata, and only
# if it is wholly reversed; a refund below pro rata only if the whole fee is refunded. With
# q = fee × amount / original and p its rounding, a refund r > p exactly when r − ½·10⁻⁸ > q,
# and r < p exactly when r + ½·10⁻⁸ ≤ q: compared multiplied by the original amount, exactly.
_REVERSALS = text(
    """
    WITH reversal AS (
        SELECT reverses, from_merchant_id, to_merchant_id, currency, amount, fee, state
        FROM transfers
        WHERE kind = 'reversal'
    ), original AS (
        SELECT id, kind, state, from_merchant_id, to_merchant_id, currency, amount, fee,
               reversed_amount, reversed_fee
        FROM transfers
        WHERE id IN (SELECT reverses FROM reversal) OR reversed_amount <> 0 OR reversed_fee <> 0
    ), per_original AS (
        SELECT r.reverses,
               count(*) FILTER (
                   WHERE o.id IS NULL OR o.kind <> 'transfer' OR o.state <> 'completed'
                      OR r.from_merchant_id IS DISTINCT FROM o.to_merchant_id
                      OR r.to_merchant_id IS DISTINCT FROM o.from_merchant_id
                      OR r.currency <> o.currency
               ) AS mismatched,
               coalesce(sum(r.amount) FILTER (WHERE r.state = 'completed'), 0) AS amount,
               coalesce(sum(r.fee) FILTER (WHERE r.state = 'completed'), 0) AS fee,
               count(*) FILTER (
                   WHERE r.state = 'completed'
                     AND (r.fee - 0.000000005) * o.amount > o.fee * r.amount
               ) AS above,
               count(*) FILTER (
                   WHERE r.state = 'completed'
                     AND (r.fee + 0.000000005) * o.amount <= o.fee * r.amount
               ) AS below
        FROM reversal r
        LEFT JOIN original o ON o.id = r.reverses
        GROUP BY r.reverses
    )
    SELECT coalesce(sum(r.mismatched), 0) AS reversals_not_matching_originals,
           count(*) FILTER (
               WHERE o.kind = 'transfer' AND (
                   o.reversed_amount <> coalesce(r.amount, 0)
                   OR o.reversed_fee <> coalesce(r.fee, 0)
                   OR o.reversed_amount > o.amount OR o.reversed_fee > o.fee
                   OR (o.reversed_amount = o.amount AND o.reversed_fee <> o.fee))
           ) AS reversal_totals_not_matching,
           count(*) FILTER (
               WHERE o.kind = 'transfer' AND (
                   r.above > 1
                   OR (r.above = 1 AND o.reversed_amount <> o.amount)
                   OR (r.below > 0 AND o.reversed_fee <> o.fee))
           ) AS fee_refunds_not_following_the_rule
    FROM per_original r
    FULL JOIN original o ON o.id = r.reverses
    """
)


# Invariant 5, one transfer per (scope, Idempotency-Key): read in the unique index's order,
# comparing neighbours, rather than hashing a million keys.
_DUPLICATE_KEYS = text(
    """
    SELECT count(*) FROM (
        SELECT 1 FROM transfers
        GROUP BY idempotency_scope, idempotency_key
        HAVING count(*) > 1
    ) duplicates
    """
)

# Exact, for the accounts whose history checksum does not match: the entries that do not
# continue the one before them (version + 1, balance_after = previous balance_after + amount).
_BROKEN_HISTORY_ENTRIES = text(
    """
    SELECT count(*) FROM (
        SELECT account_version, balance_after - amount AS balance_before,
               lag(account_version, 1, 0::bigint) OVER history AS previous_version,
               lag(balance_after, 1, 0::numeric) OVER history AS previous_balance
        FROM entries
        WHERE account_id = ANY(CAST(:account_ids AS uuid[]))
        WINDOW history AS (PARTITION BY account_id ORDER BY account_version)
    ) entry
    WHERE account_version <> previous_version + 1 OR balance_before <> previous_balance
    """
)

# Exact, when the postings checksum does not match: every movement of a transfer, its entries
# matched against the postings of its kind (a leg each: 1, 8, 64, and a conversion's FX legs
# 512 and 4096; anything else 32768, so the sum with the count names exactly the legs present).
_MOVEMENTS = text(
    f"""
    SELECT count(*) FILTER (WHERE NOT completed) AS postings_without_completion,
           count(*) FILTER (WHERE completed AND total <> 0) AS unbalanced_movements,
           count(*) FILTER (
               WHERE completed AND (legs <> expected_legs OR postings <> expected_postings)
           ) AS wrong_postings,
           count(*) FILTER (WHERE completed) AS completed_with_postings
    FROM (
        SELECT coalesce(bool_and(t.state = 'completed'), false) AS completed,
               sum(e.amount) AS total,
               count(*) AS postings,
               sum(CASE WHEN a.kind = 'merchant' AND a.merchant_id = t.from_merchant_id
                             AND a.currency = t.currency AND e.amount = t.sender_amount THEN 1
                        WHEN a.kind = 'merchant' AND a.merchant_id = t.to_merchant_id
                             AND a.currency = t.receiver_currency
                             AND e.amount = t.receiver_amount THEN 8
                        WHEN a.kind IN ('fee', 'issuance') AND a.currency = t.currency
                             AND a.shard IS NOT DISTINCT FROM t.house_shard
                             AND e.amount = t.house_amount THEN 64
                        WHEN a.kind = 'fx' AND a.currency = t.currency
                             AND e.amount = t.fx_from_amount THEN 512
                        WHEN a.kind = 'fx' AND a.currency = t.to_currency
                             AND e.amount = t.fx_to_amount THEN 4096
                        ELSE 32768 END) AS legs,
               max(CASE WHEN t.sender_amount IS NULL THEN 0 ELSE 1 END
                   + CASE WHEN t.receiver_amount IS NULL THEN 0 ELSE 8 END
                   + CASE WHEN t.house_amount IS NULL THEN 0 ELSE 64 END
                   + CASE WHEN t.to_currency IS NULL THEN 0 ELSE 512 + 4096 END)
                   AS expected_legs,
               max({_EXPECTED_POSTING_COUNT.format(t="t")}) AS expected_postings
        FROM entries e
        LEFT JOIN accounts a ON a.id = e.account_id
        LEFT JOIN ({_EXPECTED_POSTINGS}) t ON t.id = e.transfer_id
        WHERE e.transfer_id IS NOT NULL
        GROUP BY e.movement_id
    ) movement
    """
)


# The running totals' side of their checksums (a small table: a row per balance and day).
_RUNNING_TOTALS_CHECKSUMS = text(
    f"""
    SELECT b.currency,
           sum({_day_key("b.merchant_id", "b.currency", "b.day")}::numeric * b.debited)
               AS debited_checksum,
           sum({_day_key("b.merchant_id", "b.currency", "b.day")}::numeric * b.sent)
               AS sent_checksum
    FROM balance_totals b
    GROUP BY b.currency
    """
)

# Run only when the checksums differ: the running totals the worker keeps per balance and UTC
# day (limits' usage, the volume of fee tiers) against the completed transfers they sum:
# `debited` = amount + fee of transfers and withdrawals by the day they completed, `sent` =
# amount of transfers by the day they were recorded (each completed one yields its two days'
# shares), counting the (balance, day)s that differ. `EXPECTED_RUNNING_TOTALS` is what the rows of
# `balance_totals` must be (the audit bench writes its ledger's with it).
EXPECTED_RUNNING_TOTALS = """
    SELECT t.from_merchant_id AS merchant_id, t.currency, share.day,
           sum(share.debited) AS debited, sum(share.sent) AS sent
    FROM transfers t
    CROSS JOIN LATERAL (VALUES
        ((t.processed AT TIME ZONE 'UTC')::date, t.amount + t.fee, 0),
        ((t.created AT TIME ZONE 'UTC')::date, 0,
         CASE WHEN t.kind = 'transfer' THEN t.amount ELSE 0 END)
    ) AS share (day, debited, sent)
    WHERE t.state = 'completed' AND t.kind IN ('transfer', 'withdrawal')
    GROUP BY t.from_merchant_id, t.currency, share.day
    HAVING sum(share.debited) <> 0 OR sum(share.sent) <> 0
"""
_RUNNING_TOTALS = text(
    f"""
    WITH expected AS ({EXPECTED_RUNNING_TOTALS})
    SELECT count(*)
    FROM expected e
    FULL JOIN balance_totals b USING (merchant_id, currency, day)
    WHERE e.debited IS DISTINCT FROM b.debited OR e.sent IS DISTINCT FROM b.sent
    """
)


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """Conservation in one currency (SPEC invariant 3, with Part 2's deposits and withdrawals)."""

    held: Decimal = Decimal(0)  # merchant balances + fee accounts + FX account
    issued: Decimal = Decimal(0)  # minus the issuance account: money brought in, net
    brought_in: Decimal = Decimal(0)  # initial amounts of balances
    deposited: Decimal = Decimal(0)
    withdrawn: Decimal = Decimal(0)

    @property
    def net(self) -> Decimal:
        """Initial amounts + deposits − withdrawals."""
        return add_amounts(self.brought_in, self.deposited, negate(self.withdrawn))

    @property
    def conserved(self) -> bool:
        return self.held == self.issued == self.net


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """What the check read: sizes, a count per broken rule, and each currency's totals."""

    transfers: int
    entries: int
    pending_transfers: int
    violations: dict[str, int]
    currencies: dict[str, CurrencyTotals] = field(default_factory=dict)


_SETTINGS = (
    # A full check of a big ledger outlasts the usual statement timeout.
    "SET LOCAL statement_timeout = 0",
    # Compiling these queries (JIT) costs seconds and saves less.
    "SET LOCAL jit = off",
    "SET LOCAL work_mem = '64MB'",
)


def check_ledger(connection: Connection) -> LedgerCheck:
    """Every invariant, on `connection`; run it in one REPEATABLE READ snapshot, so that the
    queries agree with each other."""
    for setting in _SETTINGS:
        connection.execute(text(setting))
    accounts = {row.currency: row for row in connection.execute(_ACCOUNTS)}
    transfers = {row.currency: row for row in connection.execute(_TRANSFERS)}
    reversals = connection.execute(_REVERSALS).one()
    currencies = {
        code: _totals(accounts.get(code), transfers.get(code))
        for code in sorted(code for code in accounts.keys() | transfers.keys() if code)
    }
    violations = {
        "negative_balances": sum(row.negative_balances for row in accounts.values()),
        "balances_not_matching_journal": sum(
            row.balances_not_matching_journal for row in accounts.values()
        ),
        "initial_amounts_not_regular": int(connection.execute(_INITIAL_AMOUNTS).scalar_one()),
        "currencies_not_conserved": sum(not totals.conserved for totals in currencies.values()),
        "fees_not_following_the_rule": sum(
            row.fees_not_following_the_rule for row in transfers.values()
        ),
        "conversions_not_following_the_rule": sum(
            row.conversions_not_following_the_rule for row in transfers.values()
        ),
        "reversal_totals_not_matching": int(reversals.reversal_totals_not_matching),
        "reversals_not_matching_originals": int(reversals.reversals_not_matching_originals),
        "fee_refunds_not_following_the_rule": int(reversals.fee_refunds_not_following_the_rule),
        "duplicate_idempotency_keys": _count_duplicate_keys(connection),
    }
    violations |= _check_histories(connection, [row.broken_histories for row in accounts.values()])
    violations |= _check_postings(connection, accounts, transfers)
    violations |= _check_running_totals(connection, transfers)
    return LedgerCheck(
        transfers=sum(row.transfers for row in transfers.values()),
        entries=int(sum(row.entries for row in accounts.values())),
        pending_transfers=sum(row.pending for row in transfers.values()),
        violations=violations,
        currencies=currencies,
    )


def _totals(accounts: Any | None, transfers: Any | None) -> CurrencyTotals:
    zero = Decimal(0)
    return CurrencyTotals(
        held=accounts.held if accounts else zero,
        issued=accounts.issued if accounts else zero,
        brought_in=accounts.brought_in if accounts else zero,
        deposited=transfers.deposited if transfers else zero,
        withdrawn=transfers.withdrawn if transfers else zero,
    )


def _count_duplicate_keys(connection: Connection) -> int:
    """Read the unique index in order (a group aggregate) rather than hash a million keys."""
    connection.execute(text("SET LOCAL enable_hashagg = off"))
    duplicates = int(connection.execute(_DUPLICATE_KEYS).scalar_one())
    connection.execute(text("RESET enable_hashagg"))
    return duplicates


def _check_histories(connection: Connection, broken: list[list[UUID]]) -> dict[str, int]:
    """Count the entries that break the histories whose checksum did not match."""
    account_ids = [account_id for ids in broken for account_id in ids]
    if not account_ids:
        return {"broken_balance_history": 0, "balance_history_checksums": 0}
    entries = int(
        connection.execute(_BROKEN_HISTORY_ENTRIES, {"account_ids": account_ids}).scalar_one()
    )
    # The exact count explains the checksums, unless (a bug) it finds nothing: then say so.
    return {
        "broken_balance_history": entries,
        "balance_history_checksums": 0 if entries else len(account_ids),
    }


def _check_postings(
    connection: Connection, accounts: dict[str | None, Any], transfers: dict[str | None, Any]
) -> dict[str, int]:
    """Compare the postings checksums; where they differ, count exactly.

    Compared over all currencies at once: the journal sums an entry under its account's
    currency, the transfers a cross-currency transfer's legs under its `currency` (an account's
    seed includes its currency, so a posting in the wrong currency still does not match).
    """

    def side(rows: dict[str | None, Any]) -> tuple[Decimal, Decimal]:
        # Checksums have ~40 digits: summed exactly (Python's default context keeps 28).
        return (
            add_amounts(*(Decimal(row.postings) for row in rows.values())),
            add_amounts(*(Decimal(row.posting_count) for row in rows.values())),
        )

    unmatched = side(accounts) != side(transfers)
    if not unmatched:
        return dict.fromkeys(
            (
                "postings_without_completion",
                "unbalanced_movements",
                "wrong_postings",
                "completed_without_postings",
                "postings_checksums",
            ),
            0,
        )
    connection.execute(text("SET LOCAL work_mem = '256MB'"))
    movements = connection.execute(_MOVEMENTS).one()
    completed = sum(row.completed for row in transfers.values())
    found = {
        "postings_without_completion": int(movements.postings_without_completion),
        "unbalanced_movements": int(movements.unbalanced_movements),
        "wrong_postings": int(movements.wrong_postings),
        "completed_without_postings": completed - int(movements.completed_with_postings),
    }
    # The exact counts explain the checksums, unless (a bug) they find nothing: then say so.
    return found | {"postings_checksums": 0 if any(found.values()) else 1}


def _check_running_totals(connection: Connection, transfers: dict[str, Any]) -> dict[str, int]:
    """Balances' running totals against their completed transfers: checksums first (the
    transfers' side was summed in their one pass), the exact count only if they differ."""
    totals = {row.currency: row for row in connection.execute(_RUNNING_TOTALS_CHECKSUMS)}

    def checksums(row: Any | None) -> tuple[Decimal, Decimal]:
        return (
            (Decimal(0), Decimal(0))
            if row is None
            else (
                Decimal(row.debited_checksum),
                Decimal(row.sent_checksum),
            )
        )

    if all(
        checksums(totals.get(code)) == checksums(transfers.get(code))
        for code in totals.keys() | transfers.keys()
    ):
        return {"running_totals_not_matching": 0}
    found = int(connection.execute(_RUNNING_TOTALS).scalar_one())
    # A checksum mismatch the exact count cannot explain is a problem too.
    return {"running_totals_not_matching": found or 1}
