"""The documentation a first-time reader opens: Swagger UI served by the API itself (its assets
come from the `fastapi-offline` package, never a CDN: `/docs` works with the network off), `/`
pointing at it, and an OpenAPI document that says what the API really answers.

FastAPI's generated document is completed here, in one pass over every operation:
- every 422 is SPEC's envelope with `details` (`ValidationErrorEnvelope`), never FastAPI's
  default `HTTPValidationError`, which this API never returns;
- the headers every answer carries (`X-Request-ID`), and those of the statuses that carry one
  (`WWW-Authenticate` on 401, `Retry-After` on 429 and 503); a route documents its own
  (`Location`, `Idempotent-Replayed`, `Preference-Applied`) in its `responses=`;
- the examples of `api/schemas.py`'s models are put back as written (FastAPI drops every
  `null` from the document, so `"failure_reason": null` would vanish from an example), and a
  request body's become its media type's examples, so "Try it out" starts from a body that
  succeeds against `make run`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from api import schemas as models

DOCS_URL = "/docs"
# Where fastapi-offline's Swagger UI assets are served; `api/auth.py` lists them as public.
DOCS_ASSETS_URL = "/docs/assets"
SWAGGER_UI_PARAMETERS = {
    "persistAuthorization": True,  # "Authorize" once, keep the key across reloads
    "displayRequestDuration": True,
    "validatorUrl": None,  # no badge fetched from validator.swagger.io
}

_FASTAPI_DEFAULT_422 = ("HTTPValidationError", "ValidationError")
_VALIDATION_ENVELOPE = "#/components/schemas/ValidationErrorEnvelope"


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


REQUEST_ID_HEADER = _header(
    "This request's id (yours, if you sent a well-formed `X-Request-ID`); every log line of "
    "the request carries it."
)
RETRY_AFTER_HEADER = _header(
    "Seconds to wait before trying again (at least 1).", {"type": "integer"}
)
STATUS_HEADERS: dict[str, dict[str, dict[str, Any]]] = {
    "401": {"WWW-Authenticate": _header("`Bearer`: send `Authorization: Bearer <API key>`.")},
    "429": {"Retry-After": RETRY_AFTER_HEADER},
    "503": {"Retry-After": RETRY_AFTER_HEADER},
}


def create_documented_app(**settings: Any) -> FastAPI:
    """A FastAPI app whose `/docs` serves Swagger UI's assets itself, `/` redirecting there."""
    app = FastAPIOffline(
        docs_url=DOCS_URL,
        redoc_url=None,
        static_url=DOCS_ASSETS_URL,
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        **settings,
    )

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}{DOCS_URL}")

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def model_examples() -> dict[str, list[Any]]:
    """The examples of each model of `api/schemas.py`, by schema name, exactly as written."""
    found: dict[str, list[Any]] = {}
    for model in vars(models).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            extra = model.model_config.get("json_schema_extra")
            examples = extra.get("examples") if isinstance(extra, dict) else None
            if isinstance(examples, list):
                found[model.__name__] = examples
    return found


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, made to say what the API answers (see the module's docstring)."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name in _FASTAPI_DEFAULT_422:
        schemas.pop(name, None)
    for name, examples in model_examples().items():
        if name in schemas:
            schemas[name]["examples"] = examples
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            _complete_operation(operation, schemas)
    return document


def _complete_operation(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    # Any request can be malformed (a NUL in its query string, at least).
    malformed = responses.setdefault("422", {})
    malformed.setdefault("description", "Malformed request: every problem, and where it is")
    malformed["content"] = {"application/json": {"schema": {"$ref": _VALIDATION_ENVELOPE}}}
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers.update(STATUS_HEADERS.get(status, {}))
        headers["X-Request-ID"] = REQUEST_ID_HEADER
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and "examples" not in body:
        reference: str = body.get("schema", {}).get("$ref", "")
        examples = schemas.get(reference.rsplit("/", 1)[-1], {}).get("examples", [])
        if examples:
            body["examples"] = {
                f"example {number}": {"value": value} for number, value in enumerate(examples, 1)
            }
