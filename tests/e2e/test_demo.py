"""``radbridge demo`` from a fresh data directory, then the dashboard in headless Chromium.

The engine runs the shipped ``channels.toml`` (only its listening ports moved to free ones
and its files into a temporary directory), as ``./dev run`` would; ``radbridge demo``
pushes its DEMO order and chest radiograph through it; the dashboard then shows the
order message, the case timeline with the DEMO findings and each result, and the worklist.
Screenshots land in ``test-artifacts/demo/``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from tests.e2e.support import ARTIFACTS, REPO
from tests.e2e.test_dashboard import browser

__all__ = ["browser"]
SHOTS = ARTIFACTS / "demo"
PASSWORD = "demo-test-admin-password"
SHIPPED_LISTENERS = ("127.0.0.1:2575", "127.0.0.1:11112", "127.0.0.1:8043", "127.0.0.1:8080")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shipped_config(tmp: Path) -> Path:
    """The shipped channels.toml with free ports and every file under *tmp*."""
    text = (REPO / "channels.toml").read_text(encoding="utf-8")
    for listen in SHIPPED_LISTENERS:
        assert listen in text, f"channels.toml no longer listens on {listen}: update this test"
        text = text.replace(f'"{listen}"', f'"127.0.0.1:{free_port()}"')
    for old, new in (
        ('"sqlite:///var/', f'"sqlite:///{tmp}/var/'),
        ('"var"', f'"{tmp}/var"'),
        ('"var/', f'"{tmp}/var/'),
    ):
        assert old in text, f"channels.toml has no {old}: update this test"
        text = text.replace(old, new)
    shutil.copytree(REPO / "lookups", tmp / "lookups")  # the tables it names, beside it
    path = tmp / "channels.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_demo(config: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def demo_ids(printed: str) -> dict[str, int]:
    found = {
        "case": r"#/cases/(\d+)",
        "order": r"#/messages/(\d+)",
        "report": r"AI report, message (\d+) on ai-results",
    }
    ids = {}
    for name, pattern in found.items():
        match = re.search(pattern, printed)
        assert match, f"the demo printed no {name}:\n{printed}"
        ids[name] = int(match.group(1))
    return ids


async def login(browser: Browser, base: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(base + "/")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("[data-testid=channel-grid]")
    return page


async def test_radbridge_demo_shows_a_demo_case_end_to_end_in_the_dashboard(
    browser: Browser, engine_process: Any, cli_env: dict[str, str], tmp_path: Path
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    config = shipped_config(tmp_path)
    proc = engine_process(config)
    proc.env = {
        **{k: v for k, v in cli_env.items() if not k.startswith("RADBRIDGE_")},
        "RADBRIDGE_ADMIN_PASSWORD": PASSWORD,
    }
    proc.start(timeout=120)
    printed = run_demo(config, proc.env)
    for line in (
        "ACK CA",
        "0x0000 Success",
        "declared complete",
        "ready: accession DEMO",
        "demo-cxr: done",
        "[DEMO, shadow]",
        "dicom-qa: done",
        "-> results-outbox: SENT",
        "worklist  case",
    ):
        assert line in printed, f"{line!r} missing from:\n{printed}"
    ids = demo_ids(printed)
    host, port = proc.addresses["admin"]
    base = f"http://{host}:{port}"
    assert f"{base}/#/cases/{ids['case']}" in printed
    page = await login(browser, base)

    await page.goto(f"{base}/#/messages/{ids['order']}")  # the order, field by field
    await page.wait_for_selector("[data-testid=segments]")
    text = await page.inner_text("section[data-panel=messages]")
    assert "ORM^O01" in text and "DEMO" in text
    await page.screenshot(path=str(SHOTS / "order-message.png"), full_page=True)

    await page.goto(f"{base}/#/cases/{ids['case']}")  # order -> study -> AI -> results
    await page.wait_for_selector("[data-testid=timeline] li")
    steps = await page.locator("[data-testid=timeline] li").all_inner_texts()
    assert steps[0].startswith("order received")
    for want in (
        "study complete",
        "case ready",
        "inference ok: demo-cxr",
        "inference ok: dicom-qa",
        "finding: DEMO (not a clinical finding)",
        "AI report: ai-results",
    ):
        assert any(s.startswith(want) for s in steps), f"no {want!r} in {steps}"
    assert any("results-outbox SENT" in s for s in steps), steps
    assert all("shadow (never sent)" in s for s in steps if s.startswith("finding: DEMO"))
    await page.screenshot(path=str(SHOTS / "case-timeline.png"), full_page=True)

    await page.goto(f"{base}/#/messages/{ids['report']}")  # each result written
    await page.wait_for_selector("[data-testid=segments], section[data-panel=messages] table")
    text = await page.inner_text("section[data-panel=messages]")
    assert "results-outbox" in text and "SENT" in text
    await page.screenshot(path=str(SHOTS / "results.png"), full_page=True)

    await page.click("nav >> text=Worklist")
    row = f'[data-testid=worklist] tbody tr[data-id="{ids["case"]}"]'
    await page.wait_for_selector(row)
    assert "DEMO" in await page.inner_text(row)
    await page.screenshot(path=str(SHOTS / "worklist.png"), full_page=True)
    assert proc.terminate() == 0
