"""Domain errors: one base class, a clear message, the ids involved; no HTTP here."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The input it is about, where the raiser knows it (`header.Idempotency-Key`, ...).
        self.field = field


class InvalidInput(LedgerError):
    """A value that breaks a domain rule (amount, currency, name, ...)."""


class MerchantNotFound(LedgerError):
    def __init__(self, name_or_id: str) -> None:
        super().__init__(f"Merchant {name_or_id} does not exist")


class TransferPartiesNotFound(LedgerError):
    def __init__(self) -> None:
        super().__init__("From merchant or to merchant does not exist")


class BalanceNotFound(LedgerError):
    def __init__(self, currency: str) -> None:
        super().__init__(f"From merchant balance with currency {currency} does not exist")


class MerchantBalanceNotFound(LedgerError):
    def __init__(self, currency: str) -> None:
        super().__init__(f"Merchant balance with currency {currency} does not exist")


class NotReversible(LedgerError):
    def __init__(self) -> None:
        super().__init__("Only completed transfers can be reversed")


class ReversalExceedsRemainder(LedgerError):
    MESSAGE = "Amount exceeds the reversible remainder"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class MerchantArchived(LedgerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Merchant {name} is archived")


class DuplicateMerchant(LedgerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Merchant with name {name} already exists")


class BalanceAlreadyExists(LedgerError):
    def __init__(self, currency: str) -> None:
        super().__init__(f"Balance with currency {currency} already exists")


class TransferNotFound(LedgerError):
    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"Transfer {transfer_id} does not exist")


class BatchNotFound(LedgerError):
    def __init__(self, batch_id: str) -> None:
        super().__init__(f"Batch {batch_id} does not exist")


class BatchTooLarge(LedgerError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"A batch holds at most {limit} transfers")


class IdempotencyKeyReused(LedgerError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key} was already used for a different request")


class InvalidCursor(LedgerError):
    def __init__(self) -> None:
        super().__init__("Invalid cursor")


class DependencyUnavailable(LedgerError):
    """The database or the broker cannot be reached; nothing was written."""


class InvariantViolation(LedgerError):
    """A ledger rule that must never break was about to break: a bug, never user input."""


class Unauthenticated(LedgerError):
    """No API key, a malformed one, an unknown one, or a revoked one."""

    def __init__(self) -> None:
        super().__init__("Missing or invalid API key")


class Forbidden(LedgerError):
    """The key is valid but may not do this (admin-only, or a read-only key writing)."""

    def __init__(self) -> None:
        super().__init__("Forbidden")


class MayNotActFor(LedgerError):
    def __init__(self, merchant_name: str) -> None:
        super().__init__(f"API key may not act for merchant {merchant_name}")


class ApiKeyNotFound(LedgerError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id} does not exist")


class RateLimited(LedgerError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("Rate limit exceeded")
        self.retry_after_s = retry_after_s
