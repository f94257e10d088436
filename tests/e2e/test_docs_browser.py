"""Swagger UI renders in a real browser with no network but the API itself.

Debian's Chromium, driven by Playwright; every request to any other host is aborted and
recorded. CI installs Chromium (`.ci/run`); elsewhere the test is skipped if it is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Route, async_playwright

from tests.conftest import Processes
from tests.e2e.conftest import start_api

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags this machine's Chromium needs headless as root, and no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (CI installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    processes = Processes()
    yield start_api(processes)
    processes.stop_all()


async def test_swagger_ui_renders_offline(api_url: str) -> None:
    api_host = urlsplit(api_url).netloc
    elsewhere: list[str] = []

    async def only_the_api(route: Route) -> None:
        if urlsplit(route.request.url).netloc == api_host:
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.route("**/*", only_the_api)
            await page.goto(f"{api_url}/docs")
            await page.wait_for_selector(".opblock", timeout=20_000)
            operations = await page.locator(".opblock").count()
            title = await page.locator(".info .title").inner_text()
            authorize = await page.locator("button.authorize").count()
        finally:
            await browser.close()
    assert elsewhere == []
    assert "Mini Ledger" in title
    assert operations >= 10  # every /v1 operation is listed
    assert authorize == 1
