"""The console's webhooks in a real browser: the endpoints, one endpoint's deliveries with a
receiver that failed first, and "Send again" (a CSRF-checked form) sending the event anew."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import expect

from tests.e2e.test_console_browser import (  # noqa: F401  (fixtures)
    SEEN_MS,
    Operator,
    api,
    api_url,
    browser,
    logged_in,
    merchant,
    operator,
    tag,
    transfer,
)
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


async def test_endpoints_deliveries_and_send_again(
    logged_in: Operator,  # noqa: F811  (the fixture imported above)
    api: httpx.AsyncClient,  # noqa: F811
) -> None:
    page = logged_in.page
    receiver = Receiver(lambda _received, count: 500 if count == 1 else 200)
    created = await api.post(
        "/v1/webhook-endpoints", json={"url": receiver.url, "description": f"shop {tag()}"}
    )
    assert created.status_code == 200, created.text
    endpoint = created.json()["result"]
    try:
        payer = await merchant(api, f"payer-{tag()}", usd="100")
        payee = await merchant(api, f"payee-{tag()}")
        transfer_id = await transfer(api, payer, payee, "5")
        await receiver.wait_until(lambda r: len(r.for_transfer(transfer_id)) == 2)
        event_id = receiver.for_transfer(transfer_id)[0].id

        await logged_in.open("/console")
        await page.get_by_role("link", name="Webhooks").click()
        await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
        await page.get_by_role("link", name=receiver.url).click()
        await expect(page.locator("#endpoint-url")).to_have_text(receiver.url)
        rows = page.locator("#deliveries tbody tr").filter(has_text=event_id)
        await logged_in.reload_until("#deliveries", "delivered")
        await expect(rows).to_have_count(2)
        await expect(rows.filter(has_text="HTTP 500")).to_have_count(1)
        await expect(rows.filter(has_text="HTTP 200")).to_have_count(1)
        await logged_in.shot("webhook")

        await rows.first.get_by_role("button", name="Send again").click()
        await expect(logged_in.flash()).to_contain_text(
            f"Event {event_id} will be sent again now", timeout=SEEN_MS
        )
        await receiver.wait_until(lambda r: len(r.for_transfer(transfer_id)) == 3)
        again = receiver.for_transfer(transfer_id)
        assert again[2].id == again[0].id and again[2].body == again[0].body
        # The new attempt's line, once the worker recorded it (a page is not live: reload).
        for _ in range(100):
            await page.reload()
            if await rows.count() == 3:
                break
            await page.wait_for_timeout(200)
        await expect(rows).to_have_count(3)
    finally:
        await api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
        receiver.stop()
