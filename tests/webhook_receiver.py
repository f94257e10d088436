"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread of the test
process, recording every POST it gets and answering what the test tells it to."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WAIT_TIMEOUT_S = 90


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    peer_port: int

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


# How to answer the n-th POST (from 1) of one event id: a status code.
Respond = Callable[[Received, int], int]


def always(status: int) -> Respond:
    return lambda _received, _count: status


ANSWER_200 = always(200)


class Receiver:
    def __init__(self, respond: Respond = ANSWER_200, port: int = 0) -> None:
        self.respond = respond
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hooks"

    def start(self) -> None:
        """Listen (again, on the same port after `stop`)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                received = Received(
                    {k.lower(): v for k, v in self.headers.items()}, body, self.client_address[1]
                )
                with receiver._lock:
                    receiver.received.append(received)
                    count = sum(1 for r in receiver.received if r.id == received.id)
                status = receiver.respond(received, count)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        server.daemon_threads = True
        self._port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, event_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.id == event_id]

    def for_transfer(self, transfer_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.event["data"]["id"] == transfer_id]

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.received]

    async def wait_until(
        self, condition: Callable[[Receiver], bool], timeout_s: float = WAIT_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            assert time.monotonic() < deadline, f"receiver got {len(self.received)} POSTs"
            await asyncio.sleep(0.05)
