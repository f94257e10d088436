"""uvicorn's httptools protocol with limits on the request head (request line + header fields).

uvicorn bounds the head only under h11; httptools would buffer a header of any size (a single
64 MiB header was accepted). Here the parser is never fed more than `MAX_HEAD_BYTES` of one head,
nor more than `MAX_HEADER_FIELDS` fields: past either, the answer is SPEC's envelope with 431
and the connection is closed (a client still sending a huge head may see a reset instead).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger("api.request")

MAX_HEAD_BYTES = 16 * 1024  # uvicorn's own h11 limit, and Node's
MAX_HEADER_FIELDS = 100  # Apache's LimitRequestFields
TOO_LARGE = "Request header fields too large"


class _TooManyHeaderFields(Exception):
    """Raised from the parser's callback: it stops parsing, uvicorn then answers (see below)."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the head being read; None while a head is complete (its body is read).
        self._head_bytes: int | None = 0
        self._heads_read = 0
        self._too_many_fields = False

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:
            super().data_received(data)
            return
        room = MAX_HEAD_BYTES - self._head_bytes
        self._head_bytes += len(data)
        if len(data) <= room:
            super().data_received(data)
            return
        heads_read = self._heads_read
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._heads_read > heads_read:  # the head ended within its room: the rest is not head
            super().data_received(data[room:])
        else:
            self._refuse()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADER_FIELDS:
            self._too_many_fields = True
            raise _TooManyHeaderFields
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._heads_read += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # what comes next on this connection is a new head

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with a plain-text 400, a callback's exception too.
        if self._too_many_fields:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        request_id = uuid.uuid4().hex
        log.warning("request head refused", error=TOO_LARGE, request_id=request_id)
        body = json.dumps({"status": 431, "error": TOO_LARGE}).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]:
            head.append(name + b": " + value + b"\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()
