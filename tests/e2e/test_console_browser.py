"""The operator console in a real browser, as an operator uses it: log in, every page, every
action, and a phone-sized screen, against a real API process with the session's real workers.

Debian's Chromium, driven by Playwright; every request to another host is aborted and recorded
(the console needs no CDN), and the page must log no error (its Content-Security-Policy blocks
nothing of its own). With `CONSOLE_SCREENSHOTS=<folder>` the tests also save the screenshots
the README shows (`CONSOLE_SCREENSHOTS=docs`).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Route,
    async_playwright,
    expect,
)

from tests.conftest import ADMIN_HEADERS, ADMIN_SECRET, Processes
from tests.e2e.conftest import start_api
from tests.e2e.test_docs_browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import SETTLE_TIMEOUT_S

pytestmark = pytest.mark.e2e

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (CI installs it)", allow_module_level=True)

SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 900}
# The largest amount a request may carry: its 20 digits and 8 decimals must fit a phone too.
HUGE = "99999999999999999999.99999999"
# Playwright's own wait for what a person would see (a flash, a badge); not a timing assertion.
SEEN_MS = 15_000


@pytest.fixture(scope="module")
def api_url(workers: Processes) -> Iterator[str]:
    processes = Processes()
    yield start_api(processes)
    processes.stop_all()


@pytest.fixture(scope="module")
async def api(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, headers=ADMIN_HEADERS, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


class Operator:
    """One browser tab of an operator, with what went wrong on it recorded."""

    def __init__(self, page: Page, api_url: str) -> None:
        self.page = page
        self.url = api_url
        self.elsewhere: list[str] = []
        self.errors: list[str] = []

    async def open(self, path: str) -> None:
        await self.page.goto(f"{self.url}{path}")

    async def log_in(self, secret: str = ADMIN_SECRET) -> None:
        await self.open("/console/login")
        await self.page.get_by_label("Admin API key").fill(secret)
        await self.page.get_by_role("button", name="Log in").click()

    def flash(self) -> Any:
        return self.page.locator(".flash").first

    async def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            await self.page.screenshot(path=f"{SCREENSHOTS}/console-{name}.png", full_page=True)

    async def reload_until(self, selector: str, text: str) -> None:
        """Reload until the page shows `text` in `selector` (a transfer settling)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while text not in await self.page.locator(selector).first.inner_text():
            assert time.monotonic() < deadline, f"{selector} never showed {text!r}"
            await self.page.wait_for_timeout(200)
            await self.page.reload()


@pytest.fixture
async def operator(browser: Browser, api_url: str) -> AsyncIterator[Operator]:
    context = await browser.new_context(viewport=LAPTOP)
    page = await context.new_page()
    tab = Operator(page, api_url)
    host = urlsplit(api_url).netloc

    async def only_the_api(route: Route) -> None:
        if urlsplit(route.request.url).netloc == host:
            await route.continue_()
        else:
            tab.elsewhere.append(route.request.url)
            await route.abort()

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    await page.route("**/*", only_the_api)
    page.on("dialog", accept)

    def record(message: ConsoleMessage) -> None:
        # A page answered 401, 403 or 422 on purpose (a refused key, a bad filter) is reported
        # as a failed load of the page itself; a failed asset or script is an error.
        refused_page = message.text.startswith("Failed to load resource") and (
            "/console/static/" not in message.location.get("url", "")
        )
        if message.type == "error" and not refused_page:
            tab.errors.append(message.text)

    page.on("console", record)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    await context.close()
    assert tab.elsewhere == [], "the console asked another host"
    assert tab.errors == [], "the page logged errors"


@pytest.fixture
async def logged_in(operator: Operator) -> Operator:
    await operator.log_in()
    await expect(operator.page.get_by_role("heading", name="Overview")).to_be_visible()
    return operator


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def merchant(
    api: httpx.AsyncClient, name: str, fee: str = "0", usd: str | None = None
) -> str:
    response = await api.post("/v1/merchants", json={"name": name, "percent_fee": fee})
    assert response.status_code == 200, response.text
    if usd is not None:
        body = {"merchant_id": response.json()["result"]["id"], "currency": "USD"}
        response = await api.post("/v1/merchants/balance", json={**body, "initial_amount": usd})
        assert response.status_code == 200, response.text
    return name


async def transfer(api: httpx.AsyncClient, sender: str, receiver: str, amount: str) -> str:
    response = await api.post(
        "/v1/transfers",
        json={
            "from_merchant": sender,
            "to_merchant": receiver,
            "amount": amount,
            "currency": "USD",
        },
        headers={"Idempotency-Key": f"e2e-{uuid.uuid4()}", "Prefer": "wait=10"},
    )
    assert response.status_code in (200, 202), response.text
    transfer_id: str = response.json()["result"]["id"]
    return transfer_id


async def test_log_in_with_an_admin_key_only(operator: Operator, api: httpx.AsyncClient) -> None:
    page = operator.page
    shop = await merchant(api, f"shop-{tag()}")
    response = await api.post("/v1/api-keys", json={"name": "shop", "merchant": shop})
    merchant_secret = response.json()["result"]["secret"]
    await operator.open("/console/transfers")
    await expect(page).to_have_url(re.compile(r"/console/login\?next="))

    async def submit_key(secret: str) -> None:
        await page.get_by_label("Admin API key").fill(secret)
        await page.get_by_role("button", name="Log in").click()

    await submit_key("mlk_" + "x" * 43)
    await expect(page.get_by_role("alert")).to_contain_text("not a live API key")
    await submit_key(merchant_secret)
    await expect(page.get_by_role("alert")).to_contain_text(f"That is a merchant key ({shop})")
    await submit_key(ADMIN_SECRET)
    # The page asked for first.
    await expect(page.get_by_role("heading", name="Transfers")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/console/transfers$"))
    await page.get_by_role("button", name="Log out").click()
    await expect(operator.flash()).to_have_text("Logged out.")
    await operator.open("/console")
    await expect(page).to_have_url(re.compile(r"/console/login$"))


async def test_overview_and_the_audit(logged_in: Operator, api: httpx.AsyncClient) -> None:
    page = logged_in.page
    alice = await merchant(api, f"alice-{tag()}", fee="2", usd="10000")
    bob = await merchant(api, f"bob-{tag()}")
    await transfer(api, alice, bob, "250")
    await transfer(api, bob, alice, "999999")  # fails: bob holds no USD of his own
    await logged_in.open("/console")
    for label in ("Pending transfers", "Oldest pending", "Queue depth", "Settled, last minute"):
        await expect(page.locator(".stat", has_text=label)).to_be_visible()
    await expect(page.locator("#failures")).to_contain_text("Insufficient funds")
    await expect(page.locator("table").last).to_contain_text("250.00")
    await expect(page.locator("table").last.locator(".badge-completed").first).to_be_visible()
    await page.get_by_role("button", name="Run audit").click()
    await expect(logged_in.flash()).to_contain_text("Audit passed: every invariant holds")
    await expect(page.locator("#audit .badge")).to_have_text("passed")
    await expect(page.locator("#audit")).to_contain_text("UTC")
    await logged_in.shot("overview")


async def test_a_merchant_search_statement_and_actions(
    logged_in: Operator, api: httpx.AsyncClient
) -> None:
    page = logged_in.page
    name = await merchant(api, f"Carol Shop {tag()}", fee="1.5", usd="12345.678")
    other = await merchant(api, f"dave-{tag()}")
    await transfer(api, name, other, "1000")
    await logged_in.open("/console/merchants")
    await page.get_by_role("searchbox").fill(name.upper())
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=name).click()
    await expect(page.locator("#merchant-name")).to_contain_text(name)
    # 12,345.678 - 1,000 - 15 (1.5% fee)
    await expect(page.locator("#balances")).to_contain_text("11,330.678 USD")
    await expect(page.locator("#entries")).to_contain_text("+12,345.678")
    await expect(page.locator("#entries")).to_contain_text("-1,015.00")
    await expect(page.locator("#entries")).to_contain_text(other)
    await expect(page.locator("#closing")).to_contain_text("11,330.678")
    await logged_in.shot("merchant")

    await page.locator("summary", has_text="Change fee").click()
    await page.get_by_label("Percent fee").fill("2.25")
    await page.get_by_role("button", name="Set fee %").click()
    await expect(logged_in.flash()).to_contain_text(f"Fee of {name} is now 2.25%")
    await expect(page.locator("#merchant-fee")).to_have_text("2.25%")

    await page.locator("summary", has_text="Archive").click()
    await page.get_by_role("button", name=f"Archive {name}").click()
    await expect(logged_in.flash()).to_contain_text("is archived")
    await expect(page.locator("#merchant-name .badge")).to_have_text("archived")
    await page.get_by_label("Amount").fill("5")
    await page.get_by_role("button", name="Deposit").click()
    await expect(logged_in.flash()).to_have_text(f"Merchant {name} is archived")
    await page.locator("summary", has_text="Unarchive").click()
    await page.get_by_role("button", name=f"Unarchive {name}").click()
    await expect(page.locator("#merchant-name .badge")).to_have_text("active")

    await page.get_by_label("Amount").fill("1000.5")
    await page.get_by_label("Currency").fill("eur")
    await page.get_by_role("button", name="Deposit").click()
    await expect(logged_in.flash()).to_contain_text(f"Deposit of 1,000.50 EUR to {name}")
    await logged_in.reload_until("h1 .badge", "completed")
    await expect(page.locator("#timeline")).to_contain_text("Processed")
    await page.get_by_role("link", name=name).click()
    await expect(page.locator("#balances")).to_contain_text("1,000.50 EUR")


async def test_transfers_filters_timeline_and_reversals(
    logged_in: Operator, api: httpx.AsyncClient
) -> None:
    page = logged_in.page
    erin = await merchant(api, f"erin-{tag()}", fee="2", usd="1000")
    frank = await merchant(api, f"frank-{tag()}")
    transfer_id = await transfer(api, erin, frank, "100")
    await logged_in.open("/console/transfers")
    await page.get_by_label("From").fill(erin)
    await page.get_by_label("State").select_option("completed")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("100.00 USD")
    await expect(rows.first.locator(".badge")).to_have_text("completed")
    await page.get_by_label("State").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator(".empty")).to_have_text("No transfers match these filters.")

    await logged_in.open(f"/console/transfers/{transfer_id}")
    await logged_in.reload_until("h1 .badge", "completed")
    for step in ("Created", "Enqueued", "Processed"):
        await expect(page.locator("#timeline")).to_contain_text(step)
    await expect(page.locator("#request-id")).not_to_be_empty()
    await expect(page.locator("#reversals .empty")).to_have_text("Not reversed.")
    await logged_in.shot("transfer")

    await page.get_by_label("Amount to reverse").fill("30")
    await page.get_by_role("button", name="Reverse").click()
    await expect(logged_in.flash()).to_contain_text("Reversal of 30.00 USD (fee refund 0.60)")
    await logged_in.reload_until("h1 .badge", "completed")
    await expect(page.locator("#original")).to_contain_text(transfer_id[:8])
    await page.locator("#original a").click()
    await expect(page.locator("#reversed-amount")).to_contain_text("30.00 USD of 100.00")
    await page.get_by_label("Amount to reverse").fill("71")
    await page.get_by_role("button", name="Reverse").click()
    await expect(logged_in.flash()).to_have_text("Amount exceeds the reversible remainder")
    await page.get_by_role("button", name="Reverse").click()  # empty: all that is left
    await expect(logged_in.flash()).to_contain_text("Reversal of 70.00 USD (fee refund 1.40)")
    await logged_in.reload_until("h1 .badge", "completed")
    await page.locator("#original a").click()
    await expect(page.locator("#reversals")).to_contain_text("Fully reversed.")
    await expect(page.locator("#reversals tbody tr")).to_have_count(2)


async def test_batches_show_progress(logged_in: Operator, api: httpx.AsyncClient) -> None:
    page = logged_in.page
    gina = await merchant(api, f"gina-{tag()}", usd="100")
    hank = await merchant(api, f"hank-{tag()}")
    items: list[dict[str, str]] = [
        {
            "idempotency_key": f"b-{uuid.uuid4()}",
            "from_merchant": gina,
            "to_merchant": receiver,
            "amount": amount,
            "currency": "USD",
        }
        # The last is refused at submission: a merchant cannot pay itself.
        for receiver, amount in ((hank, "10"), (hank, "20"), (hank, "500"), (gina, "1"))
    ]
    response = await api.post("/v1/batches", json={"transfers": items})
    batch_id = response.json()["result"]["id"]
    await logged_in.open("/console/batches")
    row = page.locator("#batches tbody tr", has_text=batch_id[:8])
    await expect(row).to_contain_text("3")  # accepted
    await row.get_by_role("link").click()
    await logged_in.reload_until("h1 .badge", "finished")
    progress = page.locator("#batch-progress")
    await expect(progress.locator(".stat", has_text="Completed")).to_contain_text("2")
    await expect(progress.locator(".stat", has_text="Failed")).to_contain_text("1")
    await expect(progress.locator(".stat", has_text="Refused")).to_contain_text("1")
    await expect(page.locator("table tbody tr")).to_have_count(3)


async def test_api_keys_create_once_and_revoke(logged_in: Operator, api: httpx.AsyncClient) -> None:
    page = logged_in.page
    name = f"ops key {tag()}"
    await logged_in.open("/console/keys")
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Create key").click()
    await expect(logged_in.flash()).to_contain_text(f"Key {name} created")
    secret = await page.get_by_label("New key's secret").input_value()
    assert re.fullmatch(r"mlk_[A-Za-z0-9_-]{43}", secret)
    response = await api.get("/v1/api-keys", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    await logged_in.open("/console/keys")
    assert secret not in await page.content()
    row = page.locator("#keys tbody tr", has_text=name)
    await expect(row.locator(".badge")).to_have_text("live")
    await row.get_by_role("button", name="Revoke").click()
    await expect(logged_in.flash()).to_contain_text(f"Key {name} revoked")
    await expect(row.locator(".badge")).to_have_text("revoked")


async def test_usable_on_a_phone(browser: Browser, api_url: str, api: httpx.AsyncClient) -> None:
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    phone = Operator(page, api_url)
    name = await merchant(api, f"Ivy's Very Long Merchant Name {tag()}", fee="2", usd=HUGE)
    other = await merchant(api, f"jack-{tag()}")
    transfer_id = await transfer(api, name, other, "1234567.89")
    try:
        await phone.log_in()
        paths = [
            "/console",
            "/console/merchants",
            f"/console/merchants/{name}",
            "/console/transfers",
            f"/console/transfers/{transfer_id}",
            "/console/batches",
            "/console/keys",
        ]
        for path in paths:
            await phone.open(path)
            await expect(page.locator("main")).to_be_visible()
            overflow = await page.evaluate(
                "() => [document.documentElement.scrollWidth, document.body.scrollWidth,"
                " window.innerWidth]"
            )
            assert max(overflow[:2]) <= overflow[2], f"{path} scrolls sideways: {overflow}"
        # Table rows become cards, each value labelled.
        await phone.open(f"/console/merchants/{name}")
        first = page.locator("#balances tbody td").first
        label = await first.evaluate("cell => getComputedStyle(cell, '::before').content")
        assert label == '"Currency"'
        await expect(page.locator("#balances")).to_contain_text(
            "99,999,999,999,998,740,740.75219999 USD"
        )
        await phone.shot("phone")
    finally:
        await context.close()
