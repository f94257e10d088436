"""Pure ASGI middleware: the request id (on every log line and every answer, 500s included),
the refusal of NUL characters, and the body size limit."""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import parse_qsl, unquote_to_bytes

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import INTERNAL_ERROR, Details, error_body

log = structlog.get_logger("api.request")

REQUEST_ID_HEADER = "x-request-id"
NUL_REFUSED = "Path and query must not contain NUL characters"
TOO_LARGE = "Request body too large"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Take a well-formed `X-Request-ID` from the client or make one; echo it back.

    It is also where an unexpected exception becomes the 500 envelope. Starlette's own last
    resort (ServerErrorMiddleware) sits outside every middleware, so its answer would carry no
    `X-Request-ID` and its log line no request id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = sent if _CLIENT_REQUEST_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        started = time.perf_counter()
        status = 500

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message.setdefault("headers", []).append(
                    (REQUEST_ID_HEADER.encode(), request_id.encode())
                )
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as error:
                log.exception("unexpected error", kind=type(error).__name__)
                if started_response:
                    raise  # too late for another answer: the server closes the connection
                await _answer(send_with_id, 500, INTERNAL_ERROR)
            finally:
                log.info(
                    "request finished",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class NulRefusalMiddleware:
    """422 for a NUL character in the path or the query string, before any handler runs.

    PostgreSQL refuses NUL in text, so a name like `a%00b` would reach SQL and fail there.
    (Bodies go through validators that refuse control characters; servers refuse NUL in headers.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope["query_string"])
        ):
            details = [{"field": _nul_field(scope), "message": NUL_REFUSED}]
            await _answer(send, 422, [NUL_REFUSED], details)
            return
        await self.app(scope, receive, send)


def _nul_field(scope: Scope) -> str:
    """`path` (no route is matched yet to name its parameter), else `query.<name>`."""
    if "\x00" in scope["path"]:
        return "path"
    query = scope["query_string"].decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in value and "\x00" not in name:
            return f"query.{name}"
    return "query"


class BodyLimitMiddleware:
    """Refuse request bodies over a limit with SPEC's JSON 413, before any handler runs.

    The body is read here (at most `limit` bytes are ever held) and replayed to the app, so a
    body without Content-Length (chunked) is bounded the same way.
    """

    def __init__(
        self, app: ASGIApp, *, limit_bytes: int, limits_by_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.limits_by_path = limits_by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limits_by_path.get(scope["path"].rstrip("/"), self.limit_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, TOO_LARGE)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, TOO_LARGE)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _answer(
    send: Send, status: int, message: str | list[str], details: Details | None = None
) -> None:
    """SPEC's error envelope, sent from a middleware (no response class to lean on here)."""
    body = json.dumps(error_body(status, message, details)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
