"""Where a webhook POST goes: pinned to the address that was checked, or refused with why."""

from __future__ import annotations

import pytest

from shared.domain.webhooks import PRIVATE_ADDRESS_AT_DELIVERY, UNRESOLVED_HOST, parse_webhook_url
from shared.infra import webhook_http
from shared.infra.webhook_http import Target, resolve

pytestmark = pytest.mark.unit


def answers(*addresses: str) -> object:
    async def fake_resolve(url: object, timeout_s: float = 0) -> list[str]:
        return list(addresses)

    return fake_resolve


class TestCheckedTarget:
    async def test_a_name_is_pinned_to_the_address_checked(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(webhook_http, "resolve", answers("93.184.215.14"))
        target = await webhook_http._checked_target("https://hooks.example.com:8443/in?x=1")
        assert target == Target(
            "https://93.184.215.14:8443/in?x=1",
            {"host": "hooks.example.com:8443"},
            {"sni_hostname": "hooks.example.com"},
        )
        monkeypatch.setattr(webhook_http, "resolve", answers("2606:4700::1111"))
        target = await webhook_http._checked_target("http://hooks.example.com/in")
        assert target == Target("http://[2606:4700::1111]/in", {"host": "hooks.example.com"})

    @pytest.mark.parametrize(
        ("addresses", "refusal"),
        [
            ((), UNRESOLVED_HOST),
            (("93.184.215.14", "10.0.0.7"), PRIVATE_ADDRESS_AT_DELIVERY),
            (("64:ff9b::a9fe:a9fe",), PRIVATE_ADDRESS_AT_DELIVERY),
        ],
    )
    async def test_refused_with_why(
        self, monkeypatch: pytest.MonkeyPatch, addresses: tuple[str, ...], refusal: str
    ) -> None:
        monkeypatch.setattr(webhook_http, "resolve", answers(*addresses))
        assert await webhook_http._checked_target("https://hooks.example.com/") == refusal

    async def test_a_literal_address_is_sent_as_it_is(self) -> None:
        assert await webhook_http._checked_target("http://93.184.215.14/in") == Target(
            "http://93.184.215.14/in"
        )
        assert await webhook_http._checked_target("http://127.0.0.1:9/in") == (
            PRIVATE_ADDRESS_AT_DELIVERY
        )


async def test_a_malformed_host_resolves_to_nothing() -> None:
    """An empty or over-long label makes the resolver raise UnicodeError: no address."""
    for url in ("http://a..b/", f"http://{'a' * 64}.example/"):
        assert await resolve(parse_webhook_url(url)) == []
