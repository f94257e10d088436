"""The one error table: domain error -> HTTP status, and the handlers that render SPEC's envelope.

Domain errors render `{"status": code, "error": "<message>"}`. Every 422 renders its messages
as a list, `{"status": 422, "error": ["<message>", ...], "details": [{"field": ..., "message":
...}, ...]}`, one detail per message naming the input it is about (`body.<name>`,
`header.<Name>`, `query.<name>`, `path.<name>`), so a client can rely on one shape for "fix your
request". A batch item's error is rendered here too (`item_error`, `item_validation_error`), its
fields relative to the item. Unexpected exceptions are answered (500) by `api.middleware`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorDetail, ErrorEnvelope, ItemError, ValidationErrorEnvelope
from shared.domain import errors, fx, webhooks

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 1
INTERNAL_ERROR = "Internal server error"

ERROR_STATUS: dict[type[errors.LedgerError], int] = {
    errors.InvalidInput: 422,
    errors.IdempotencyKeyReused: 422,
    errors.InvalidCursor: 422,
    errors.MerchantArchived: 400,
    errors.NotReversible: 400,
    errors.ReversalExceedsRemainder: 400,
    fx.NoFxRate: 400,
    fx.CrossCurrencyNotReversible: 400,
    fx.ConvertedAmountZero: 422,
    fx.ConvertedAmountTooLarge: 422,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.MayNotActFor: 403,
    errors.ApiKeyNotFound: 404,
    errors.RateLimited: 429,
    errors.MerchantNotFound: 404,
    errors.TransferPartiesNotFound: 404,
    errors.BalanceNotFound: 404,
    errors.MerchantBalanceNotFound: 404,
    errors.TransferNotFound: 404,
    errors.BatchNotFound: 404,
    webhooks.WebhookEndpointNotFound: 404,
    webhooks.WebhookDeliveryNotFound: 404,
    errors.DuplicateMerchant: 409,
    errors.BalanceAlreadyExists: 409,
    errors.BatchTooLarge: 413,
    errors.DependencyUnavailable: 503,
}


# The input a domain 422 is about, when the error itself does not say: where it is on the wire.
INPUT_FIELD: dict[type[errors.LedgerError], str] = {
    errors.IdempotencyKeyReused: "header.Idempotency-Key",
    errors.InvalidCursor: "query.cursor",
}
# The same for a batch item, whose inputs are its own fields.
ITEM_INPUT_FIELD: dict[type[errors.LedgerError], str] = {
    errors.IdempotencyKeyReused: "body.idempotency_key",
}
# A 422 whose input nobody named (none is raised today): the request's body.
UNNAMED_INPUT = "body"

Details = list[dict[str, str]]


def status_of(error: errors.LedgerError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def field_of(error: errors.LedgerError, fields: Mapping[type[errors.LedgerError], str]) -> str:
    """The input a domain 422 is about: the error's own `field`, else the table's."""
    if error.field is not None:
        return error.field
    for cls in type(error).__mro__:
        if cls in fields:
            return fields[cls]
    return UNNAMED_INPUT


def error_body(
    status: int, message: str | list[str], details: Details | None = None
) -> dict[str, object]:
    """SPEC's error envelope. A 422's messages are a list, each with its detail."""
    if status != 422:
        return {"status": status, "error": message}
    messages = [message] if isinstance(message, str) else message
    if details is None:
        details = [{"field": UNNAMED_INPUT, "message": text} for text in messages]
    return {"status": status, "error": messages, "details": details}


def _field_of_location(location: Sequence[int | str], context: Mapping[str, Any] | None) -> str:
    """`("body", "amount")` -> `body.amount`; an invalid JSON body (`("body", 12)`) -> `body`.

    A rule about several fields (the same merchant on both sides) names the one it blames in its
    context (`{"field": "to_merchant"}`), since its location is the whole model.
    """
    parts = [str(part) for part in location if isinstance(part, str)]
    blamed = (context or {}).get("field")
    if isinstance(blamed, str):
        parts.append(blamed)
    return ".".join(parts)


def _validation_problems(
    problems: Iterable[Mapping[str, Any]], prefix: Sequence[str] = ()
) -> tuple[list[str], Details]:
    messages: list[str] = []
    details: Details = []
    for problem in problems:
        context = problem.get("ctx")
        if problem.get("type") == "json_invalid":
            reason = (context or {}).get("error", "malformed body")
            message = f"Invalid JSON: {reason}"
            field = "body"
        else:
            message = str(problem["msg"])
            field = _field_of_location([*prefix, *problem["loc"]], context)
        messages.append(message)
        details.append({"field": field, "message": message})
    return messages, details


def item_validation_error(error: ValidationError) -> ItemError:
    """A batch item that failed validation: 422, its fields named relative to the item."""
    messages, details = _validation_problems(error.errors(), prefix=("body",))
    return ItemError(
        status=422,
        message=messages,
        details=[ErrorDetail(field=d["field"], message=d["message"]) for d in details],
    )


def item_error(error: errors.LedgerError) -> ItemError:
    """A batch item refused by the service, as SPEC renders it (a list, with details, for 422)."""
    status = status_of(error)
    if status != 422:
        return ItemError(status=status, message=error.message)
    field = field_of(error, ITEM_INPUT_FIELD)
    return ItemError(
        status=status,
        message=[error.message],
        details=[ErrorDetail(field=field, message=error.message)],
    )


def error_response(error: errors.LedgerError) -> JSONResponse:
    """A domain error as SPEC's envelope, with the headers its status calls for."""
    status = status_of(error)
    if status >= 500:
        log.error("ledger error", error=error.message, kind=type(error).__name__)
        message = error.message if status == 503 else INTERNAL_ERROR
    else:
        message = error.message
    details = None
    if status == 422:
        details = [{"field": field_of(error, INPUT_FIELD), "message": error.message}]
    headers = None
    if isinstance(error, errors.Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(error, errors.RateLimited):
        headers = {"Retry-After": str(error.retry_after_s)}
    elif status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(error_body(status, message, details), status_code=status, headers=headers)


async def _ledger_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.LedgerError)
    return error_response(error)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    messages, details = _validation_problems(error.errors())
    return JSONResponse(error_body(422, messages, details), status_code=422)


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


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route behind the key check: its own error statuses, the key
    check's 401 (no valid key) and 429 (over the key's rate limit), and 422 (any request can
    be malformed: a NUL in its query string, at least). The headers each status carries are
    documented by `api.openapi`."""
    return {
        status: {"model": ValidationErrorEnvelope if status == 422 else ErrorEnvelope}
        for status in sorted({401, 422, 429, *statuses})
    }
