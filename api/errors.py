"""The one error table: domain error -> HTTP status, and the handlers that render SPEC's envelope.

Domain errors render `{"status": code, "error": "<message>"}`. Every 422 renders its messages
as a list, `{"status": 422, "error": ["<message>", ...]}`, so a client can rely on one shape
for "fix your request". Unexpected exceptions are answered (500) by `api.middleware`.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorEnvelope
from shared.domain import errors

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 1
INTERNAL_ERROR = "Internal server error"

ERROR_STATUS: dict[type[errors.LedgerError], int] = {
    errors.InvalidInput: 422,
    errors.IdempotencyKeyReused: 422,
    errors.InvalidCursor: 422,
    errors.MerchantArchived: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.MayNotActFor: 403,
    errors.ApiKeyNotFound: 404,
    errors.RateLimited: 429,
    errors.MerchantNotFound: 404,
    errors.TransferPartiesNotFound: 404,
    errors.BalanceNotFound: 404,
    errors.TransferNotFound: 404,
    errors.BatchNotFound: 404,
    errors.DuplicateMerchant: 409,
    errors.BalanceAlreadyExists: 409,
    errors.BatchTooLarge: 413,
    errors.DependencyUnavailable: 503,
}


def status_of(error: errors.LedgerError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def describe(error: errors.LedgerError) -> tuple[int, str | list[str]]:
    """A domain error's status and message, as SPEC renders it (a list for 422)."""
    status = status_of(error)
    return status, [error.message] if status == 422 else error.message


def error_body(status: int, message: str | list[str]) -> dict[str, object]:
    if status == 422 and isinstance(message, str):
        message = [message]
    return {"status": status, "error": message}


def validation_messages(error: RequestValidationError) -> list[str]:
    messages = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            messages.append(f"Invalid JSON: {item.get('ctx', {}).get('error', 'malformed body')}")
        else:
            messages.append(str(item["msg"]))
    return messages


def error_response(error: errors.LedgerError) -> JSONResponse:
    """A domain error as SPEC's envelope, with the headers its status calls for."""
    status = status_of(error)
    if status >= 500:
        log.error("ledger error", error=error.message, kind=type(error).__name__)
        message = error.message if status == 503 else INTERNAL_ERROR
    else:
        message = error.message
    headers = None
    if isinstance(error, errors.Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(error, errors.RateLimited):
        headers = {"Retry-After": str(error.retry_after_s)}
    elif status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


async def _ledger_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.LedgerError)
    return error_response(error)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse(error_body(422, validation_messages(error)), status_code=422)


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse(
        error_body(error.status_code, str(error.detail)),
        status_code=error.status_code,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Any other exception is answered by RequestIdMiddleware, inside the request id's scope.


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` for a route behind the key check: its own error statuses, and the
    key check's 401 (no valid key) and 429 (over the key's rate limit)."""
    return {status: {"model": ErrorEnvelope} for status in sorted({401, 429, *statuses})}
