"""The dashboard in headless Chromium (the system browser, via Playwright's Python API).

Screenshots land in ``test-artifacts/dashboard/`` (git-ignored). A missing Chromium
fails these tests; ``scripts/peers.sh`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from bench.hl7gen import orm_o01
from channels.mllp.framing import frame
from tests.e2e.support import (
    ARTIFACTS,
    PASSWORDS,
    REPO,
    Started,
    admin_engine,
    base_url,
    chromium_or_fail,
    config_text,
    seed_case,
    send_hl7,
    write_users_file,
)

__all__ = ["admin_engine"]
SHOTS = ARTIFACTS / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def login(browser: Browser, base: str, role: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(base + "/")
    assert page.url.endswith("/login")
    await page.fill("input[name=username]", role)
    await page.fill("input[name=password]", PASSWORDS[role])
    await page.click("button[type=submit]")
    await page.wait_for_selector("[data-testid=channel-grid]")
    assert role in await page.inner_text("[data-testid=who]")
    return page


def cell(channel: str, name: str) -> str:
    return f'[data-testid=channel-grid] tr[data-name="{channel}"] [data-testid={name}]'


async def number(page: Page, channel: str, name: str) -> int:
    return int(await page.inner_text(cell(channel, name)))


async def wait_number(page: Page, channel: str, name: str, want: int, secs: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + secs
    while await number(page, channel, name) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{channel}.{name} never {want}"
        await asyncio.sleep(0.2)


def replay_file(path: Path, good: int, bad: int) -> Path:
    """An MLLP-framed log: *good* orders, then *bad* messages of a type the channel refuses."""
    msgs = [orm_o01(f"REPLAY{i}", accession=f"ACC{i:04d}") for i in range(good)]
    msgs += [orm_o01(f"BAD{i}").replace(b"ORM^O01^ORM_O01", b"ORU^R01^ORU_R01")
             for i in range(bad)]
    path.write_bytes(b"".join(frame(m) for m in msgs))
    return path


async def replay_while_watching(page: Page, proc: Any, log: Path) -> tuple[bytes, bool]:
    """Run ``radbridge send`` against the engine; True when the grid showed it midway."""
    ris_host, ris_port = proc.addresses["ris"]
    send = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "send", str(log), "--to",
        f"mllp://{ris_host}:{ris_port}", "--rate", "12", "--quiet",
        cwd=REPO, env=proc.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    seen_midway = False
    while send.returncode is None:
        received = await number(page, "ris", "received")
        if 0 < received < 63 and not seen_midway:
            seen_midway = True
            assert (await page.inner_text(cell("ris", "rate"))) != "0/s"
            await page.screenshot(path=str(SHOTS / "live-traffic-during-replay.png"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(send.wait(), 0.25)
    out, _ = await send.communicate()
    return out, seen_midway


async def test_the_channel_grid_shows_live_traffic_from_a_radbridge_send_replay(
        browser: Browser, engine_process: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "channels.toml"
    config.write_text(config_text(tmp_path))
    proc = engine_process(config)
    proc.env = {**{k: v for k, v in cli_env.items() if not k.startswith("RADBRIDGE_")},
                "RADBRIDGE_USERS_FILE": str(write_users_file(tmp_path / "users.toml"))}
    proc.start()
    host, port = proc.addresses["admin"]
    page = await login(browser, f"http://{host}:{port}", "analyst")
    assert await number(page, "ris", "received") == 0
    out, seen_midway = await replay_while_watching(page, proc,
                                                   replay_file(tmp_path / "log.hl7", 60, 3))
    assert b"sent 63 messages: CA 60, CR 3" in out  # enhanced mode: commit accept / reject
    assert seen_midway, "the grid never showed the replay in progress"
    await wait_number(page, "ris", "received", 63)
    await wait_number(page, "ris", "errored", 3)
    await wait_number(page, "archive", "sent", 60)
    await page.screenshot(path=str(SHOTS / "channels-after-replay.png"))

    await page.click(cell("ris", "errored"))  # drill down: the errors...
    rows = page.locator("[data-testid=message-list] tbody tr[data-id]")
    await rows.first.wait_for()
    assert await rows.count() == 3
    await rows.first.click()
    await page.wait_for_selector("[data-testid=segments]")  # ...to the message
    text = await page.inner_text("section[data-panel=messages]")
    assert "Message Control ID" in text and "BAD" in text and "not accepted" in text
    await page.screenshot(path=str(SHOTS / "error-drilled-down-to-message.png"), full_page=True)
    assert proc.terminate() == 0


async def test_the_message_viewer_masks_phi_for_a_viewer(browser: Browser,
                                                         admin_engine: Started) -> None:
    engine, _ = await admin_engine()
    await send_hl7(engine, orm_o01("MASK1", patient_id="MRN5150", accession="ACC5150"))
    page = await login(browser, base_url(engine), "viewer")
    assert "masked" in await page.inner_text("#banner")
    await page.goto(base_url(engine) + "/#/messages/1")
    await page.wait_for_selector("[data-testid=segments]")
    text = await page.inner_text("section[data-panel=messages]")
    assert "Patient Name" in text and "***" in text and "MRN5150" not in text
    assert await page.is_visible("[data-testid=masked]")
    await page.screenshot(path=str(SHOTS / "message-masked-for-viewer.png"), full_page=True)


async def test_an_analyst_sees_the_message_segment_by_segment_and_as_text(
        browser: Browser, admin_engine: Started) -> None:
    engine, _ = await admin_engine()
    await send_hl7(engine, orm_o01("SHOW1", patient_id="MRN6160"))
    page = await login(browser, base_url(engine), "analyst")
    await page.goto(base_url(engine) + "/#/messages/1")
    await page.wait_for_selector("[data-testid=segments]")
    segments = await page.locator("[data-testid=segments] .segment").count()
    assert segments >= 5
    names = await page.inner_text('[data-segment="OBR"]')
    assert "Universal Service Identifier" in names and "Placer Order Number" in names
    await page.screenshot(path=str(SHOTS / "message-fields.png"), full_page=True)
    await page.click("text=Show text")
    assert "MRN6160" in await page.inner_text("[data-testid=layer-text]")


async def test_a_case_timeline_shows_each_step_with_timings(browser: Browser,
                                                            admin_engine: Started) -> None:
    engine, _ = await admin_engine()
    case_id = await seed_case(engine)
    page = await login(browser, base_url(engine), "radiologist")
    await page.click("nav >> text=Cases")
    await page.wait_for_selector("[data-testid=case-list] tbody tr[data-id]")
    await page.click(f'[data-testid=case-list] tr[data-id="{case_id}"]')
    await page.wait_for_selector("[data-testid=timeline] li")
    steps = await page.locator("[data-testid=timeline] li").all_inner_texts()
    assert steps[0].startswith("order received") and steps[-1].startswith("case ready")
    assert any("study complete" in s for s in steps) and all("from start" in s for s in steps)
    await page.screenshot(path=str(SHOTS / "case-timeline.png"), full_page=True)


async def test_an_analyst_stops_and_starts_one_channel_from_the_grid_and_it_is_audited(
        browser: Browser, admin_engine: Started) -> None:
    engine, _ = await admin_engine()
    page = await login(browser, base_url(engine), "analyst")
    await page.click('tr[data-name="spare"] [data-action=stop]')
    await page.wait_for_selector('tr[data-name="spare"] [data-action=start]')
    assert engine.controls.channel_state("spare") == "stopped"
    assert engine.controls.channel_state("ris") == "running"
    await page.screenshot(path=str(SHOTS / "channel-stopped.png"))
    await page.click('tr[data-name="spare"] [data-action=start]')
    await page.wait_for_selector('tr[data-name="spare"] [data-action=stop]')
    admin = await login(browser, base_url(engine), "admin")
    await admin.click("nav >> text=Audit log")
    await admin.wait_for_selector("[data-testid=audit-list]")
    audit = await admin.inner_text("[data-testid=audit-list]")
    assert "channel.stop" in audit and "channel.start" in audit and "analyst" in audit
    await admin.screenshot(path=str(SHOTS / "audit-log.png"))


async def test_a_radiologist_sees_the_ai_raised_case_first_and_confirms_its_finding(
        browser: Browser, admin_engine: Started) -> None:
    from engine.model import Finding, Status
    from engine.store.base import NewMessage, Outcome
    from engine.store.inference import JobState
    from engine.store.results import WorklistUpdate

    engine, _ = await admin_engine()
    case_id = await seed_case(engine)
    store = engine.store
    (job,) = await store.enqueue_jobs(case_id, ["cxr-triage"], 1)
    await store.claim_jobs(10, 1e12)
    finding = Finding("36118008", "Pneumothorax", "SCT", 0.93, True, "cxr-triage", "1.2.0",
                      criticality="critical")
    await store.finish_job(job.id, JobState.DONE, [finding], None)
    flags = [{"code": "36118008", "display": "Pneumothorax", "probability": 0.93,
              "model": "cxr-triage", "version": "1.2.0", "demo": False}]
    mid = await store.insert_message(NewMessage("ai-results", 0.0, b"{}"))
    await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, domain=WorklistUpdate(
        case_id, "uid", "STAT", "AI cxr-triage 1.2.0: Pneumothorax 0.93", flags))])

    page = await login(browser, base_url(engine), "radiologist")
    await page.click("nav >> text=Worklist")
    first = "[data-testid=worklist] tbody tr:first-child"
    await page.wait_for_selector(f'{first}[data-id="{case_id}"]')
    assert "STAT" in await page.inner_text(first)
    assert "Pneumothorax" in await page.inner_text(first)
    await page.click(f'{first} li[data-code="36118008"] button[data-verdict=accept]')
    await page.wait_for_selector("[data-testid=agreement] tbody tr td.num")
    row = await page.inner_text("[data-testid=agreement] tbody tr")
    assert "cxr-triage" in row and "100.0%" in row
    await page.screenshot(path=str(SHOTS / "worklist.png"), full_page=True)
    (entry,) = await store.list_feedback(case_id)
    assert (entry.verdict, entry.reader, entry.source) == ("accept", "radiologist",
                                                           "radiologist")
