"""The tester on a channel's page, in headless Chromium: paste or pick a message, see each step."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page

from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, base_url, config_text, send_hl7
from tests.e2e.test_dashboard import SHOTS, browser, login
from tests.integration.test_admin_try import channels, ct_order

__all__ = ["admin_engine", "browser"]


async def try_message(page: Page, *, text: str = "", message_id: str = "") -> str:
    """Fill the Try panel, run it, and return the outcome line once it is shown."""
    await page.fill("[data-testid=try-message]", text)
    await page.fill("[data-testid=try-message-id]", message_id)
    await page.click("[data-testid=try-run]")

    async def done() -> bool:
        return await page.inner_text("[data-testid=try-note]") == "nothing was stored or sent"

    await wait_for(done, timeout=30)
    return await page.inner_text("[data-testid=try-outcome]")


async def test_an_analyst_tries_a_pasted_and_a_stored_message_on_the_channel_page(
        browser: Browser, admin_engine: Started, tmp_path: Path) -> None:
    engine, _ = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    assert await send_hl7(engine, ct_order("STORED1").encode()) in ("AA", "CA")
    await wait_for(lambda: engine.store.list_orders(10))
    page = await login(browser, base_url(engine), "analyst")
    await page.click('tr[data-name="ris"] [data-testid=channel-link]')
    await page.wait_for_selector("[data-testid=try-panel]")
    assert "Channel ris" in await page.inner_text("section[data-panel=channels]")

    pasted = ct_order("TEST1", mode="T").replace("\r", "\n")
    outcome = await try_message(page, text=pasted)
    assert outcome.startswith("FILTERED") and "filtered by no-test-traffic" in outcome
    step = page.locator("[data-testid=try-step]")
    assert await step.count() == 1
    assert await step.first.get_attribute("data-result") == "filtered"
    assert "filter no-test-traffic" in await step.first.inner_text()

    outcome = await try_message(page, message_id="1")
    assert outcome.startswith("TRANSFORMED") and "1 destination(s)" in outcome
    assert await step.count() == 2
    delivery = page.locator('[data-testid=try-delivery][data-destination="archive"]')
    assert "Patient Name" in await delivery.inner_text()  # the payload, field by field
    assert "ACC5150" in await page.inner_text("[data-testid=try-layer]")
    assert await engine.store.counts() == {("ris", "SENT"): 1}  # nothing new stored
    await page.screenshot(path=str(SHOTS / "channel-try.png"), full_page=True)


async def test_a_viewer_tries_a_stored_message_and_sees_it_masked(
        browser: Browser, admin_engine: Started, tmp_path: Path) -> None:
    engine, _ = await admin_engine(config_text(tmp_path, channels=channels(tmp_path)))
    assert await send_hl7(engine, ct_order("STORED2").encode()) in ("AA", "CA")
    await wait_for(lambda: engine.store.list_orders(10))
    page = await login(browser, base_url(engine), "viewer")
    await page.goto(base_url(engine) + "/#/channels/ris")
    await page.wait_for_selector("[data-testid=try-panel]")
    assert (await try_message(page, message_id="1")).startswith("TRANSFORMED")
    assert await page.is_visible("[data-testid=try-result] [data-testid=masked]")
    text = await page.inner_text("[data-testid=try-result]")
    assert "MRN5150" not in text and "ACC5150" not in text and "***" in text
    await page.screenshot(path=str(SHOTS / "channel-try-masked.png"), full_page=True)
