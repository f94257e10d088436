"""Limits with what they used in the current UTC period, read from the running totals (the
worker under the balances' locks, the API for `GET /merchants/{name}`): at most 31 rows of
`balance_totals` per balance, never a sum over history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, text

from shared.domain.limits import BalanceLimit, LimitPeriod, LimitUsage


def _limits_with_usage(where: str) -> TextClause:
    # Days after `today` (a clock that moved back) belong to no current period.
    return text(
        f"""
        SELECT l.merchant_id, l.currency, l.period, l.max_amount,
               COALESCE(sum(t.debited) FILTER (WHERE l.period = 'month' OR t.day = :today), 0)
                   AS used
        FROM balance_limits l
        LEFT JOIN balance_totals t
          ON t.merchant_id = l.merchant_id AND t.currency = l.currency
         AND t.day BETWEEN :month_start AND :today
        WHERE {where}
        GROUP BY l.merchant_id, l.currency, l.period, l.max_amount
        ORDER BY l.merchant_id, l.currency, l.period
        """
    )


LIMITS_OF_BALANCES = _limits_with_usage(
    """(l.merchant_id, l.currency) IN (
        SELECT * FROM unnest(CAST(:merchant_ids AS uuid[]), CAST(:currencies AS varchar[])))"""
)
LIMITS_OF_MERCHANT = _limits_with_usage("l.merchant_id = :merchant_id")


def to_limit_usage(row: Any) -> LimitUsage:
    return LimitUsage(BalanceLimit(row.currency, LimitPeriod(row.period), row.max_amount), row.used)
