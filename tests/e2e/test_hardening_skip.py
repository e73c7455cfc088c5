"""The dashboard lets an operator skip a stuck queue head and retry it (issue 12, finding 2).

Headless Chromium against a running engine whose downstream MLLP peer (a real python-hl7
server) drops every connection that carries the head message: the Queues panel shows the
head and calls it stalled, "Skip head" asks why and the queue moves on; the message
viewer's Retry sends it once the peer is fixed. Both actions land in the audit log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import Browser, Dialog

from bench.hl7gen import adt_a01
from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, base_url, send_hl7
from tests.e2e.test_dashboard import SHOTS, browser, login
from tests.integration.test_hardening_poison import StickySink, mllp_out

__all__ = ["admin_engine", "browser"]


@pytest_asyncio.fixture
async def sticky() -> AsyncIterator[StickySink]:
    s = StickySink()
    await s.start()
    yield s
    await s.stop()


def config(tmp: Path, endpoint: str) -> str:
    return f"""
[store]
url = "sqlite:///{tmp / 'radbridge.db'}"
[engine]
data_dir = "{tmp / 'var'}"
stalled_queue_secs = 1
[admin]
listen = "127.0.0.1:0"
stats_interval_secs = 0.3

[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["out"]

[[channel]]
name = "out"
destination = {{ {mllp_out(endpoint)} }}
"""


async def _answer(reason: str, dialog: Dialog) -> None:
    await dialog.accept(reason)


async def test_an_analyst_skips_a_stalled_head_from_the_queues_panel_and_retries_it_later(
        browser: Browser, admin_engine: Started, sticky: StickySink, tmp_path: Path) -> None:
    engine, _ = await admin_engine(config(tmp_path, sticky.endpoint))
    for cid in ("STUCK1", "Q1", "Q2"):
        assert await send_hl7(engine, adt_a01(cid)) == "AA"
    worker = engine.workers["out"]
    await wait_for(lambda: worker.head is not None and worker.retries >= 1)

    page = await login(browser, base_url(engine), "analyst")
    await page.click("nav >> text=Queues")
    row = '[data-testid=queue-list] tr[data-name="out"]'
    await page.wait_for_selector(f"{row} [data-testid=head] >> text=stalled", timeout=30_000)
    assert "message 1" in await page.inner_text(f"{row} [data-testid=head]")
    await page.screenshot(path=str(SHOTS / "queue-stalled-head.png"))
    page.once("dialog", lambda d: _answer("the EHR cannot take it, ticket 42", d))
    await page.click(f"{row} [data-action=skip]")
    await wait_for(lambda: sticky.control_ids == ["Q1", "Q2"], timeout=30)
    await page.wait_for_selector(f"{row} [data-action=skip]", state="detached", timeout=30_000)

    sticky.refuse = False  # the EHR is fixed: retry the skipped delivery from its message
    await page.goto(base_url(engine) + "/#/messages/1")
    await page.wait_for_selector("[data-testid=delivery-list] [data-action=retry]")
    text = await page.inner_text("[data-testid=delivery-list]")
    assert "SKIPPED by analyst: the EHR cannot take it, ticket 42" in text
    page.once("dialog", lambda d: _answer("EHR fixed", d))
    await page.click("[data-testid=delivery-list] [data-action=retry]")
    await wait_for(lambda: sticky.control_ids == ["Q1", "Q2", "STUCK1"], timeout=30)
    await page.screenshot(path=str(SHOTS / "delivery-retried.png"), full_page=True)

    audit = engine.admin.state.audit
    (skip,) = await audit.query(action="delivery.skip")
    (retry,) = await audit.query(action="delivery.retry")
    assert (skip.user, skip.detail["reason"]) == ("analyst", "the EHR cannot take it, ticket 42")
    assert (retry.user, retry.target) == ("analyst", skip.target)
