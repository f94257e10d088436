"""The operator console over HTTP (SPEC Part 2, Operations, `/console`): admin-key login, the
session cookie's flags, CSRF on every form, every page, and each action's effect as the API's
own services see it. The browser's view is `tests/e2e/test_console_browser.py`."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.console.format import duration, money
from api.console.session import COOKIE
from shared.services.operations import AUDIT_KEY
from tests.conftest import ADMIN_SECRET
from tests.helpers import (
    balance_of,
    create_merchant,
    funded_merchant,
    settle,
    submit,
    unique,
)

pytestmark = pytest.mark.integration

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FORM_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF token on the page"
    return match.group(1)


class Console:
    """A browser-like client of the console: cookies, no bearer header, forms with tokens."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    async def get(self, path: str, **params: str) -> httpx.Response:
        response = await self.http.get(path, params=params or None)
        if response.status_code == 200 and "csrf_token" in response.text:
            self.csrf = csrf_of(response.text)
        return response

    async def post(self, path: str, form: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post(path, data={"csrf_token": self.csrf, **(form or {})})

    async def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code == 303, response.text
        return await self.get(response.headers["location"])

    async def log_in(self, secret: str = ADMIN_SECRET) -> httpx.Response:
        await self.get("/console/login")
        return await self.post("/console/login", {"key": secret})


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[Console]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        yield Console(http)


@pytest.fixture
async def console(browser: Console) -> Console:
    response = await browser.log_in()
    assert response.status_code == 303 and response.headers["location"] == "/console"
    await browser.get("/console")  # the session's CSRF token, new with the login
    return browser


async def create_key(api: httpx.AsyncClient, merchant: str | None = None) -> dict[str, Any]:
    response = await api.post("/v1/api-keys", json={"name": unique("key"), "merchant": merchant})
    assert response.status_code == 200, response.text
    key: dict[str, Any] = response.json()["result"]
    return key


async def merchant_of(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await api.get(f"/v1/merchants/{name}")
    assert response.status_code == 200, response.text
    merchant: dict[str, Any] = response.json()["result"]
    return merchant


def flash(page: str) -> str:
    match = re.search(r'<div class="flash flash-(ok|error)"[^>]*>([^<]*)</div>', page)
    assert match, "no flash message on the page"
    return f"{match.group(1)}: {html.unescape(match.group(2))}"


class TestFormatting:
    def test_money_is_exact_with_thousands_separators(self) -> None:
        assert money(Decimal("1234567.50000000")) == "1,234,567.50"
        assert money(Decimal("0.00012345")) == "0.00012345"
        assert money(Decimal("-25")) == "-25.00"
        assert money(Decimal("25"), signed=True) == "+25.00"
        # 30 integer digits, every one kept: no float anywhere.
        assert money(Decimal("123456789012345678901234567890.12345678")) == (
            "123,456,789,012,345,678,901,234,567,890.12345678"
        )

    def test_durations_read_at_a_glance(self) -> None:
        assert duration(4.7) == "4 s"
        assert duration(125) == "2 min 5 s"
        assert duration(7_500) == "2 h 5 min"
        assert duration(None) == "—"


class TestLogin:
    async def test_pages_need_a_session(self, browser: Console) -> None:
        response = await browser.http.get("/console")
        assert response.status_code == 303
        assert response.headers["location"] == "/console/login"
        response = await browser.http.get("/console/merchants", params={"q": "a"})
        assert response.status_code == 303
        assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fmerchants%3Fq%3Da"

    async def test_the_login_page_needs_no_key(self, browser: Console) -> None:
        response = await browser.get("/console/login")
        assert response.status_code == 200
        assert "Admin API key" in response.text
        assert response.headers["content-type"].startswith("text/html")

    async def test_session_cookie_is_httponly_strict_and_scoped(self, browser: Console) -> None:
        response = await browser.log_in()
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        flags = {flag.strip().lower() for flag in cookie.split(";")[1:]}
        assert "httponly" in flags
        assert "samesite=strict" in flags
        assert "path=/console" in flags
        assert ADMIN_SECRET not in cookie  # the key's hash only, signed
        assert (await browser.get("/console")).status_code == 200
        assert "secure" not in flags  # plain HTTP, and CONSOLE_COOKIE_SECURE unset

    async def test_session_cookie_is_secure_behind_a_tls_proxy(
        self, browser: Console, app: FastAPI
    ) -> None:
        """The proxy ended TLS, so the API sees http: CONSOLE_COOKIE_SECURE still marks it."""
        settings = app.state.settings
        app.state.settings = dataclasses.replace(settings, console_cookie_secure=True)
        try:
            response = await browser.log_in()
        finally:
            app.state.settings = settings
        flags = {flag.strip().lower() for flag in response.headers["set-cookie"].split(";")[1:]}
        assert "secure" in flags

    async def test_an_unknown_key_is_refused(self, browser: Console) -> None:
        response = await browser.log_in("mlk_" + "x" * 43)
        assert response.status_code == 401
        assert "not a live API key" in response.text
        assert (await browser.http.get("/console")).status_code == 303

    async def test_a_merchant_key_is_refused(
        self, browser: Console, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client)
        key = await create_key(api_client, merchant["name"])
        response = await browser.log_in(key["secret"])
        assert response.status_code == 403
        assert f"That is a merchant key ({merchant['name']})" in response.text
        assert "needs an admin key" in response.text
        assert (await browser.http.get("/console")).status_code == 303

    async def test_log_in_goes_to_the_page_asked_for(self, browser: Console) -> None:
        response = await browser.http.get("/console/batches")
        login = await browser.get(response.headers["location"])
        assert 'name="next" value="/console/batches"' in login.text
        response = await browser.post(
            "/console/login", {"key": ADMIN_SECRET, "next": "/console/batches"}
        )
        assert response.headers["location"] == "/console/batches"
        # Never to another site.
        await browser.get("/console")
        response = await browser.post(
            "/console/login", {"key": ADMIN_SECRET, "next": "https://evil.example/"}
        )
        assert response.headers["location"] == "/console"

    async def test_log_out(self, console: Console) -> None:
        page = await console.follow(await console.post("/console/logout"))
        assert "Logged out." in page.text
        assert (await console.http.get("/console")).status_code == 303

    async def test_a_revoked_key_ends_its_sessions(
        self, browser: Console, api_client: httpx.AsyncClient
    ) -> None:
        key = await create_key(api_client)
        assert (await browser.log_in(key["secret"])).status_code == 303
        assert (await browser.get("/console")).status_code == 200
        response = await api_client.delete(f"/v1/api-keys/{key['id']}")
        assert response.status_code == 200
        # Key caches live under a second: the session ends within one.
        deadline = time.monotonic() + 5
        while (response := await browser.http.get("/console")).status_code == 200:
            assert time.monotonic() < deadline, "the session outlived its key"
            await asyncio.sleep(0.1)
        assert response.headers["location"] == "/console/login"
        page = await browser.get("/console/login")
        assert "its API key was revoked" in page.text


class TestCsrf:
    async def test_a_form_without_the_token_is_refused(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client, "1")
        path = f"/console/merchants/{merchant['name']}/fee"
        for form in ({"percent_fee": "9"}, {"percent_fee": "9", "csrf_token": "forged"}):
            response = await console.http.post(path, data=form)
            assert response.status_code == 403
            assert "Form expired" in response.text
        assert (await merchant_of(api_client, merchant["name"]))["percent_fee"] == "1.00"

    async def test_every_action_checks_it(self, console: Console) -> None:
        some_id = str(uuid.uuid4())
        for path in (
            "/console/merchants/x/fee",
            "/console/merchants/x/archive",
            "/console/merchants/x/deposits",
            f"/console/transfers/{some_id}/reversals",
            "/console/keys",
            f"/console/keys/{some_id}/revoke",
            "/console/audit",
            "/console/logout",
            "/console/login",
        ):
            response = await console.http.post(path, data={"amount": "1"})
            assert response.status_code == 403, path

    async def test_a_json_body_is_no_form(self, console: Console) -> None:
        response = await console.http.post(
            "/console/audit", json={"csrf_token": console.csrf}, headers={"content-type": "x"}
        )
        assert response.status_code == 403


class TestPages:
    async def test_every_page_renders(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await funded_merchant(api_client, "1234.5")
        batch = await api_client.post(
            "/v1/batches",
            json={
                "transfers": [
                    {
                        "idempotency_key": unique(),
                        "from_merchant": merchant["name"],
                        "to_merchant": "nobody-" + unique(),
                        "amount": "1",
                        "currency": "USD",
                    }
                ]
            },
        )
        batch_id = batch.json()["result"]["id"]
        pages = {
            "/console": "Pending transfers",
            "/console/merchants": "Merchants",
            f"/console/merchants/{merchant['name']}": "1,234.50",
            "/console/transfers": "Transfers",
            "/console/batches": batch_id[:8],
            f"/console/batches/{batch_id}": "every item was refused",
            "/console/keys": "Create a key",
        }
        for path, text in pages.items():
            response = await console.get(path)
            assert response.status_code == 200, path
            assert text in response.text, path
            assert response.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]

    async def test_merchants_are_searched_by_name(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        wanted = await create_merchant(api_client, name=f"Shop {tag} North")
        await create_merchant(api_client, name=f"other-{uuid.uuid4().hex[:8]}")
        page = await console.get("/console/merchants", q=f"shop {tag.upper()}")
        assert wanted["name"] in page.text
        assert "other-" not in page.text
        page = await console.get("/console/merchants", q="%_no such_%")
        assert "No merchant's name contains" in page.text

    async def test_a_merchant_with_its_statement(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(api_client, "1000", percent_fee="2")
        receiver = await create_merchant(api_client)
        response = await submit(api_client, sender["name"], receiver["name"], "100")
        await settle(api_client, [response.json()["result"]["id"]])
        page = await console.get(f"/console/merchants/{sender['name']}", currency="usd")
        assert "Statement · USD" in page.text
        assert "+1,000.00" in page.text  # the initial amount
        assert "-102.00" in page.text  # amount + fee
        assert "898.00" in page.text  # closing balance
        assert receiver["name"] in page.text  # the counterparty

    async def test_a_merchant_shows_its_fee_tiers_and_limits_with_their_use(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(api_client, "5000")
        receiver = await create_merchant(api_client)
        tiers = [
            {"from_volume": "0", "percent_fee": "2"},
            {"from_volume": "1000", "percent_fee": "1.5"},
        ]
        limits = [{"currency": "USD", "period": "day", "max_amount": "2500"}]
        response = await api_client.patch(
            f"/v1/merchants/{sender['name']}", json={"fee_tiers": tiers, "limits": limits}
        )
        assert response.status_code == 200
        response = await submit(api_client, sender["name"], receiver["name"], "1200")
        await settle(api_client, [response.json()["result"]["id"]])
        page = await console.get(f"/console/merchants/{sender['name']}")
        text = " ".join(re.sub(r"<[^>]+>", "", page.text).split())
        assert "from 0.00: 2.00% · from 1,000.00: 1.50%" in text
        assert "USD per day: 1,224.00 USD of 2,500.00 USD used" in text

    async def test_unknown_things_are_404_pages(self, console: Console) -> None:
        for path in (
            "/console/merchants/nobody-at-all",
            f"/console/transfers/{uuid.uuid4()}",
            "/console/transfers/not-a-uuid",
            f"/console/batches/{uuid.uuid4()}",
        ):
            response = await console.get(path)
            assert response.status_code == 404, path
            assert "does not exist" in response.text, path

    async def test_transfers_take_the_api_filters(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(api_client, "10")
        receiver = await create_merchant(api_client)
        sent = await submit(api_client, sender["name"], receiver["name"], "4")
        failed = await submit(api_client, sender["name"], receiver["name"], "400")
        ids = [sent.json()["result"]["id"], failed.json()["result"]["id"]]
        await settle(api_client, ids)
        page = await console.get(
            "/console/transfers", **{"from": sender["name"], "state": "failed", "kind": "transfer"}
        )
        assert ids[1][:8] in page.text and ids[0][:8] not in page.text
        assert "Insufficient funds" in page.text
        assert 'class="badge badge-failed"' in page.text
        page = await console.get("/console/transfers", to=receiver["name"], currency="usd")
        assert ids[0][:8] in page.text and ids[1][:8] in page.text
        page = await console.get("/console/transfers", state="lost")
        assert page.status_code == 422
        assert "State must be one of pending, completed, failed" in page.text

    async def test_a_conversion_shows_its_snapshot_and_no_reverse_form(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        currency = "C" + uuid.uuid4().hex[:6].upper()
        rate = await api_client.put(f"/v1/fx-rates/USD/{currency}", json={"rate": "1.5"})
        assert rate.status_code == 200, rate.text
        sender = await funded_merchant(api_client, "10")
        receiver = await create_merchant(api_client)
        response = await api_client.post(
            "/v1/transfers",
            json={
                "from_merchant": sender["name"],
                "to_merchant": receiver["name"],
                "amount": "2",
                "currency": "USD",
                "to_currency": currency,
            },
            headers={"Idempotency-Key": unique("fx")},
        )
        (transfer,) = await settle(api_client, [response.json()["result"]["id"]])
        assert transfer["state"] == "completed"
        page = await console.get(f"/console/transfers/{transfer['id']}")
        converted = re.search(r'id="converted-amount">(.*?)</dd>', page.text, re.S)
        assert converted, "no converted amount"
        text = re.sub(r"<[^>]+>", "", converted.group(1))
        assert text.startswith(f"3.00 {currency}"), text
        assert "Cross-currency transfers cannot be reversed." in page.text
        assert 'id="reverse-form"' not in page.text

    async def test_transfers_are_paginated(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        from api.console import pages

        sender = await funded_merchant(api_client, "1000")
        receiver = await create_merchant(api_client)
        for _ in range(pages.TRANSFERS_PAGE + 1):
            response = await submit(api_client, sender["name"], receiver["name"], "1")
            assert response.status_code == 202
        page = await console.get("/console/transfers", **{"from": sender["name"]})
        cursor = re.search(r'href="\?([^"]*cursor=[^"]+)"', page.text)
        assert cursor, "no next page"
        params = dict(
            part.split("=", 1) for part in cursor.group(1).replace("&amp;", "&").split("&")
        )
        assert params["from"] == sender["name"]
        second = await console.http.get(
            f"/console/transfers?{cursor.group(1)}".replace("&amp;", "&")
        )
        assert second.text.count('data-label="Transfer"') == 1

    async def test_console_routes_are_measured_by_template(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        await console.get("/console/merchants/nobody-at-all")
        metrics = (await api_client.get("/metrics")).text
        assert 'route="/console/merchants/{name}",status="404"' in metrics
        assert "nobody-at-all" not in metrics

    async def test_console_routes_are_not_in_openapi(self, api_client: httpx.AsyncClient) -> None:
        schema = (await api_client.get("/openapi.json")).json()
        assert not [path for path in schema["paths"] if path.startswith("/console")]

    async def test_static_files_are_served_locally(self, browser: Console) -> None:
        for name in ("pico.min.css", "console.css", "console.js"):
            response = await browser.http.get(f"/console/static/{name}")
            assert response.status_code == 200, name
        assert (await browser.http.get("/console/static/..%2Fsession.py")).status_code == 404


class TestActions:
    async def test_change_a_fee(self, console: Console, api_client: httpx.AsyncClient) -> None:
        merchant = await create_merchant(api_client, "1")
        path = f"/console/merchants/{merchant['name']}"
        await console.get(path)
        page = await console.follow(await console.post(f"{path}/fee", {"percent_fee": "2.5"}))
        assert flash(page.text) == (
            f"ok: Fee of {merchant['name']} is now 2.50%, for transfers submitted from now on."
        )
        assert (await merchant_of(api_client, merchant["name"]))["percent_fee"] == "2.50"
        page = await console.follow(await console.post(f"{path}/fee", {"percent_fee": "101"}))
        assert flash(page.text) == "error: Percent fee must be between 0 and 100"

    async def test_archive_and_unarchive(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client)
        path = f"/console/merchants/{merchant['name']}"
        await console.get(path)
        page = await console.follow(await console.post(f"{path}/archive", {"archived": "true"}))
        assert "is archived" in flash(page.text)
        assert 'class="badge badge-archived"' in page.text
        assert (await merchant_of(api_client, merchant["name"]))["archived"] is True
        # A refusal speaks the domain's words.
        form_key = _FORM_KEY.search(page.text)
        assert form_key
        page = await console.follow(
            await console.post(
                f"{path}/deposits",
                {"amount": "5", "currency": "USD", "idempotency_key": form_key.group(1)},
            )
        )
        assert flash(page.text) == f"error: Merchant {merchant['name']} is archived"
        page = await console.follow(await console.post(f"{path}/archive", {"archived": "false"}))
        assert "is active again" in flash(page.text)
        assert (await merchant_of(api_client, merchant["name"]))["archived"] is False

    async def test_deposit_once_per_form(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client)
        path = f"/console/merchants/{merchant['name']}"
        page = await console.get(path)
        form_key = _FORM_KEY.search(page.text)
        assert form_key
        form = {"amount": "1234.56", "currency": "eur", "idempotency_key": form_key.group(1)}
        first = await console.post(f"{path}/deposits", form)
        transfer_path = first.headers["location"]
        transfer_id = transfer_path.rsplit("/", 1)[1]
        page = await console.follow(first)
        assert f"Deposit of 1,234.56 EUR to {merchant['name']}" in flash(page.text)
        (transfer,) = await settle(api_client, [transfer_id])
        assert transfer["kind"] == "deposit" and transfer["state"] == "completed"
        again = await console.post(f"{path}/deposits", form)
        assert again.headers["location"] == transfer_path
        page = await console.follow(again)
        assert "already sent: no second deposit" in flash(page.text)
        assert await balance_of(api_client, merchant["name"], "EUR") == Decimal("1234.56")
        page = await console.get(transfer_path)
        assert "Request id" in page.text and 'id="request-id"' in page.text
        assert 'class="badge badge-completed"' in page.text

    async def test_reverse_partly_then_fully(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(api_client, "1000", percent_fee="2")
        receiver = await create_merchant(api_client)
        response = await submit(api_client, sender["name"], receiver["name"], "100")
        (original,) = await settle(api_client, [response.json()["result"]["id"]])
        path = f"/console/transfers/{original['id']}"

        async def reverse(amount: str) -> httpx.Response:
            page = await console.get(path)
            form_key = _FORM_KEY.search(page.text)
            assert form_key
            return await console.post(
                f"{path}/reversals", {"amount": amount, "idempotency_key": form_key.group(1)}
            )

        partial = await reverse("40")
        reversal_id = partial.headers["location"].rsplit("/", 1)[1]
        assert "Reversal of 40.00 USD (fee refund 0.80)" in flash(
            (await console.follow(partial)).text
        )
        await settle(api_client, [reversal_id])
        page = await console.get(f"/console/transfers/{reversal_id}")
        assert 'id="original"' in page.text and original["id"][:8] in page.text
        refused = await console.follow(await reverse("61"))
        assert flash(refused.text) == "error: Amount exceeds the reversible remainder"
        rest = await reverse("")
        assert "Reversal of 60.00 USD (fee refund 1.20)" in flash((await console.follow(rest)).text)
        await settle(api_client, [rest.headers["location"].rsplit("/", 1)[1]])
        page = await console.get(path)
        assert "Fully reversed." in page.text
        assert page.text.count('data-label="Transfer"') == 2  # both reversals listed
        assert await balance_of(api_client, sender["name"]) == Decimal("1000")

    async def test_create_and_revoke_keys(
        self, console: Console, api_client: httpx.AsyncClient
    ) -> None:
        merchant = await create_merchant(api_client)
        await console.get("/console/keys")
        name = unique("shop key")
        page = await console.post(
            "/console/keys",
            {"name": name, "merchant": merchant["name"], "scope": "read", "rate_limit": "5/second"},
        )
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        found = re.search(r'id="secret-value"[^>]*value="(mlk_[A-Za-z0-9_-]{43})"', page.text)
        if found is None:
            found = re.search(r'value="(mlk_[A-Za-z0-9_-]{43})"[^>]*id="secret-value"', page.text)
        assert found, "the new key's secret is not on the page"
        headers = {"Authorization": f"Bearer {found.group(1)}"}
        response = await api_client.get(f"/v1/merchants/{merchant['name']}", headers=headers)
        assert response.status_code == 200
        listed = {
            key["name"]: key for key in (await api_client.get("/v1/api-keys")).json()["result"]
        }
        assert listed[name]["scope"] == "read" and listed[name]["rate_limit"] == "5/second"
        # Shown once: the keys page never shows it again.
        assert found.group(1) not in (await console.get("/console/keys")).text
        response = await console.post(f"/console/keys/{listed[name]['id']}/revoke")
        page = await console.follow(response)
        assert f"Key {name} revoked" in flash(page.text)
        listed = {
            key["name"]: key for key in (await api_client.get("/v1/api-keys")).json()["result"]
        }
        assert listed[name]["revoked"] is not None
        page = await console.follow(
            await console.post("/console/keys", {"name": "x", "merchant": "nobody-" + unique()})
        )
        assert "error: Merchant" in flash(page.text) and "does not exist" in flash(page.text)

    async def test_revoking_its_own_key_logs_out(
        self, browser: Console, api_client: httpx.AsyncClient
    ) -> None:
        key = await create_key(api_client)
        await browser.log_in(key["secret"])
        await browser.get("/console/keys")
        response = await browser.post(f"/console/keys/{key['id']}/revoke")
        assert response.headers["location"] == "/console/login"
        page = await browser.get("/console/login")
        assert "it was this session&#39;s" in page.text
        assert (await browser.http.get("/console")).status_code == 303

    async def test_run_the_audit(
        self, console: Console, app: FastAPI, api_client: httpx.AsyncClient
    ) -> None:
        await console.get("/console")
        page = await console.follow(await console.post("/console/audit"))
        assert flash(page.text).startswith("ok: Audit passed: every invariant holds")
        assert 'class="badge badge-completed">passed' in page.text
        stored = json.loads(await app.state.redis.hget(AUDIT_KEY, "report"))
        assert stored["ok"] is True and stored["problems"] == []
        assert {"checked_at", "transfers", "entries"} <= stored.keys()

    async def test_the_overview_says_when_no_audit_ran(
        self, console: Console, app: FastAPI
    ) -> None:
        await app.state.redis.delete(AUDIT_KEY)
        page = await console.get("/console")
        assert "Never run." in page.text

    async def test_the_overview_counts_failures_by_reason(
        self, console: Console, api_client: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        sender = await funded_merchant(api_client, "1")
        receiver = await create_merchant(api_client)
        response = await submit(api_client, sender["name"], receiver["name"], "5")
        await settle(api_client, [response.json()["result"]["id"]])
        page = await console.get("/console")
        assert re.search(r'Reason">Insufficient funds</td>\s*<td data-label="Last hour"', page.text)
        settled = re.search(r'id="stat-settled">([\d,]+)<', page.text)
        assert settled and int(settled.group(1).replace(",", "")) >= 1
