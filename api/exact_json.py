"""Request bodies parsed as JSON without ever producing a binary float.

Starlette's `Request.json()` turns `0.1` into a float. Here every JSON number becomes a
`Decimal` exactly as written (19 significant digits stay 19), `NaN`/`Infinity` and exponents
beyond Decimal's range are refused, and a body that is not UTF-8 is a JSON error (422), not a
400. JSON's grammar admits ASCII digits only, and integers go to `Decimal`, never `int()` (whose
4,300-digit limit would raise).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _exact_number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as error:
        # An exponent past Decimal's own limit (1e99999999999999999999): no number to hold.
        raise ValueError("Number out of range") from error


def parse_exact_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError("Body is not valid UTF-8", "", error.start) from error
    try:
        return json.loads(
            text, parse_float=_exact_number, parse_int=Decimal, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        raise json.JSONDecodeError(str(error), text, 0) from error


class ExactJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_exact_json(await self.body())
        return self._json


class ExactJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_json_handler(request: Request) -> Response:
            return await handler(ExactJSONRequest(request.scope, request.receive))

        return exact_json_handler
