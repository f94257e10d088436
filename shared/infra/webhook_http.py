"""Webhooks over HTTP: where a host name points, and sending a round of signed POSTs.

Sending is asyncio (httpx): a round's requests run at once, at most `concurrency` in flight, and
each is cut off `DELIVERY_TIMEOUT_S` after it started, whatever stage it is in (httpx's own
timeouts are per stage: a receiver trickling bytes could outlast them). Redirects are not
followed: a 3xx is not a 2xx.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
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
    """One HTTP client for a run of rounds (its connections are reused across rounds)."""

    def __init__(self, concurrency: int, allow_private: bool) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(DELIVERY_TIMEOUT_S),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._allow_private = allow_private

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send_all(self, posts: Sequence[Post]) -> list[AttemptOutcome]:
        """Every POST's outcome, in order; never raises for what a receiver does."""
        refused = await self._refused_hosts(posts)
        return list(
            await asyncio.gather(*(self._send(post, post.url in refused) for post in posts))
        )

    async def _refused_hosts(self, posts: Sequence[Post]) -> set[str]:
        """The URLs whose host now resolves to a private address (checked again at each round:
        a name can be pointed elsewhere after the endpoint was created)."""
        if self._allow_private:
            return set()
        urls = {post.url for post in posts}
        refused = set()
        for url in urls:
            addresses = await resolve(parse_webhook_url(url))
            if addresses and any(is_private_address(address) for address in addresses):
                refused.add(url)
        return refused

    async def _send(self, post: Post, refused: bool) -> AttemptOutcome:
        if refused:
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
