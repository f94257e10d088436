"""The ledger check: SPEC's invariants, read back from the database.

Each query counts the rows that break one rule; a healthy ledger has zero everywhere.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

INVARIANT_QUERIES: dict[str, str] = {
    # 1. No balance is ever negative (the issuance account mirrors money brought in).
    "negative_balances": "SELECT count(*) FROM accounts WHERE kind <> 'issuance' AND amount < 0",
    # 2. Every stored balance and version equals what the journal says.
    "balances_not_matching_journal": """
        SELECT count(*) FROM accounts a
        LEFT JOIN (
            SELECT account_id, sum(amount) AS total, count(*) AS n, max(account_version) AS v
            FROM entries GROUP BY account_id
        ) e ON e.account_id = a.id
        WHERE a.amount <> coalesce(e.total, 0)
           OR a.version <> coalesce(e.n, 0)
           OR a.version <> coalesce(e.v, 0)
    """,
    "broken_balance_history": """
        SELECT count(*) FROM (
            SELECT balance_after, account_version,
                   sum(amount) OVER w AS running, row_number() OVER w AS position
            FROM entries
            WINDOW w AS (PARTITION BY account_id ORDER BY account_version)
        ) history
        WHERE balance_after <> running OR account_version <> position
    """,
    # Double entry: every movement (transfer or deposit) sums to zero.
    "unbalanced_movements": """
        SELECT count(*) FROM (
            SELECT movement_id FROM entries GROUP BY movement_id HAVING sum(amount) <> 0
        ) unbalanced
    """,
    # 3. Conservation: per currency, merchant balances + fees = money brought in.
    "currencies_not_conserved": """
        SELECT count(*) FROM (
            SELECT currency FROM accounts GROUP BY currency
            HAVING sum(amount) FILTER (WHERE kind <> 'issuance')
                <> -coalesce(sum(amount) FILTER (WHERE kind = 'issuance'), 0)
        ) leaking
    """,
    # 4. completed <=> its postings exist, and they are exactly the postings of the rule.
    "completed_without_postings_or_reverse": """
        SELECT count(*) FROM transfers t
        LEFT JOIN (SELECT DISTINCT transfer_id FROM entries WHERE transfer_id IS NOT NULL) posted
            ON posted.transfer_id = t.id
        WHERE (t.state = 'completed') <> (posted.transfer_id IS NOT NULL)
    """,
    "completed_with_wrong_postings": """
        SELECT count(*) FROM (
            SELECT t.fee,
                   count(*) AS postings,
                   bool_or(a.kind = 'merchant' AND a.merchant_id = t.from_merchant_id
                           AND e.amount = -(t.amount + t.fee)) AS debited,
                   bool_or(a.kind = 'merchant' AND a.merchant_id = t.to_merchant_id
                           AND e.amount = t.amount) AS credited,
                   bool_or(a.kind = 'fee' AND e.amount = t.fee) AS fee_collected,
                   bool_and(a.currency = t.currency) AS one_currency
            FROM transfers t
            JOIN entries e ON e.transfer_id = t.id
            JOIN accounts a ON a.id = e.account_id
            WHERE t.state = 'completed'
            GROUP BY t.id, t.fee
        ) posted
        WHERE postings <> CASE WHEN fee > 0 THEN 3 ELSE 2 END
           OR NOT debited OR NOT credited OR NOT one_currency
           OR (fee > 0 AND NOT fee_collected)
    """,
    "fees_not_following_the_rule": """
        SELECT count(*) FROM transfers WHERE fee <> round(amount * percent_fee / 100, 8)
    """,
    # 5. One Idempotency-Key, at most one transfer.
    # 5. One Idempotency-Key, one transfer, within each owner scope (NULL: the platform's).
    "duplicate_idempotency_keys": """
        SELECT count(*) - count(DISTINCT (idempotency_scope, idempotency_key)) FROM transfers
    """,
}


def audit_counts(connection: Connection) -> dict[str, int]:
    """Run inside one transaction; a full check of a big ledger may outlast the usual timeout."""
    connection.execute(text("SET LOCAL statement_timeout = 0"))
    counts = {
        name: int(connection.execute(text(sql)).scalar_one())
        for name, sql in INVARIANT_QUERIES.items()
    }
    counts["pending_transfers"] = int(
        connection.execute(
            text("SELECT count(*) FROM transfers WHERE state = 'pending'")
        ).scalar_one()
    )
    return counts
