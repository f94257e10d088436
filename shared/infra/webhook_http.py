"""Webhooks over HTTP: where a host name points, and sending signed POSTs.

Sending is asyncio (httpx): at most `concurrency` requests in flight, each cut off
`DELIVERY_TIMEOUT_S` after it started, whatever stage it is in (httpx's own timeouts are per
stage: a receiver trickling bytes could outlast them). Redirects are not followed: a 3xx is not
a 2xx.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.domain.errors import InvalidInput
from shared.domain.webhooks import (
    DELIVERY_TIMEOUT_S,
    PRIVATE_ADDRESS_AT_DELIVERY,
    UNRESOLVED_HOST,
    AttemptOutcome,
    WebhookUrl,
    answered,
    is_private_address,
    not_answered,
    parse_webhook_url,
)

RESOLVE_TIMEOUT_S = 5.0
USER_AGENT = "mini-ledger-webhooks/1"


async def resolve(url: WebhookUrl, timeout_s: float = RESOLVE_TIMEOUT_S) -> list[str]:
    """Every address the URL's host resolves to ([] when it does not resolve in time)."""
    if (literal := url.address_literal) is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            found = await loop.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):  # UnicodeError: an empty or too long label
        return []
    return sorted({str(info[4][0]) for info in found})


@dataclass(frozen=True, slots=True)
class Post:
    url: str
    headers: dict[str, str]
    body: bytes


class Sender:
    """One HTTP client for a delivery run: its connections are reused, at most `concurrency`
    requests are in flight, and where each URL's host points is resolved once per run.

    Unless private targets are allowed, the request goes to the very address that was checked
    (the URL's host pinned to it, the name kept in `Host` and in TLS's SNI and certificate
    check): a name cannot answer the check with a public address and the connection with a
    private one. No proxy from the environment either."""

    def __init__(self, concurrency: int, allow_private: bool) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(DELIVERY_TIMEOUT_S),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
            trust_env=False,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._allow_private = allow_private
        self._targets: dict[str, Target | str] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, post: Post) -> AttemptOutcome:
        """The POST's outcome; never raises: whatever goes wrong is the attempt's error."""
        target = await self._target(post.url)
        if isinstance(target, str):
            return not_answered(target)
        async with self._slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    response = await self._client.post(
                        target.url,
                        content=post.body,
                        headers={**post.headers, **target.headers},
                        extensions=target.extensions,
                    )
            except TimeoutError:
                return not_answered(f"Timed out after {DELIVERY_TIMEOUT_S:g} s")
            except httpx.TimeoutException:
                elapsed = time.monotonic() - started
                return not_answered(f"Timed out after {elapsed:.1f} s")
            except Exception as error:  # One bad URL must not end the run.
                return not_answered(f"{type(error).__name__}: {error}".rstrip(": "))
            return answered(response.status_code)

    async def _target(self, url: str) -> Target | str:
        """Where to send a POST for `url` (or why not): resolved again at each run, since a
        name can be pointed elsewhere after the endpoint was created."""
        if self._allow_private:
            return Target(url)
        if url not in self._targets:
            self._targets[url] = await _checked_target(url)
        return self._targets[url]


@dataclass(frozen=True, slots=True)
class Target:
    """The URL a request is sent to, with what keeps the original host name on it."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


async def _checked_target(url: str) -> Target | str:
    """`url` pinned to a public address of its host, or the reason it is refused."""
    try:
        parsed = parse_webhook_url(url)
    except InvalidInput as error:
        return error.message
    addresses = await resolve(parsed)
    if not addresses:
        return UNRESOLVED_HOST
    if any(is_private_address(address) for address in addresses):
        return PRIVATE_ADDRESS_AT_DELIVERY
    if parsed.address_literal is not None:
        return Target(url)
    parts = urlsplit(url)
    address = addresses[0]
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": parsed.host} if parts.scheme == "https" else {}
    return Target(
        urlunsplit(parts._replace(netloc=netloc)),
        {"host": parts.netloc},
        extensions,
    )
