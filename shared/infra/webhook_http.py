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
from dataclasses import dataclass

import httpx

from shared.domain.webhooks import (
    DELIVERY_TIMEOUT_S,
    PRIVATE_ADDRESS_AT_DELIVERY,
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
    except (OSError, TimeoutError):
        return []
    return sorted({str(info[4][0]) for info in found})


@dataclass(frozen=True, slots=True)
class Post:
    url: str
    headers: dict[str, str]
    body: bytes


class Sender:
    """One HTTP client for a delivery run: its connections are reused, at most `concurrency`
    requests are in flight, and where each URL's host points is checked once per run."""

    def __init__(self, concurrency: int, allow_private: bool) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(DELIVERY_TIMEOUT_S),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._allow_private = allow_private
        self._refused: dict[str, bool] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, post: Post) -> AttemptOutcome:
        """The POST's outcome; never raises for what a receiver does."""
        if await self._points_to_private(post.url):
            return not_answered(PRIVATE_ADDRESS_AT_DELIVERY)
        async with self._slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    response = await self._client.post(
                        post.url, content=post.body, headers=post.headers
                    )
            except TimeoutError:
                return not_answered(f"Timed out after {DELIVERY_TIMEOUT_S:g} s")
            except httpx.TimeoutException:
                elapsed = time.monotonic() - started
                return not_answered(f"Timed out after {elapsed:.1f} s")
            except httpx.HTTPError as error:
                return not_answered(f"{type(error).__name__}: {error}".rstrip(": "))
            return answered(response.status_code)

    async def _points_to_private(self, url: str) -> bool:
        """Whether the URL's host now resolves to a private address: checked again at each
        run, since a name can be pointed elsewhere after the endpoint was created."""
        if self._allow_private:
            return False
        if url not in self._refused:
            addresses = await resolve(parse_webhook_url(url))
            self._refused[url] = any(is_private_address(address) for address in addresses)
        return self._refused[url]
