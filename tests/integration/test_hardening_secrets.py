"""A running engine never shows a secret: ``GET /api/config`` returns references only.

The review found ``dicomweb_poll.password`` returned in clear to analysts. Here every
connector that takes a secret gets one from the environment or a file, the PACS poller
is seen to authenticate with it, and the API response is searched for each value.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, config_text

__all__ = ["admin_engine"]  # the fixture, imported for pytest

PACS_PASSWORD = "pacs-password-from-a-file-7c1d"
FHIR_SECRET = "fhir-client-secret-from-env-93ab"
STOW_TOKEN = "stow-bearer-token-from-env-5e20"
WEBHOOK_SECRET = "webhook-hmac-secret-from-a-file-0f44"


async def _pacs(seen: list[str]) -> web.AppRunner:
    """A PACS stand-in that records the Authorization header and is always busy."""

    async def busy(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=503)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _channels(tmp: Path, pacs_port: int) -> str:
    (tmp / "pacs.pw").write_text(PACS_PASSWORD + "\n")
    (tmp / "hook.key").write_text(WEBHOOK_SECRET)
    return f"""
[[channel]]
name = "pacs"
[channel.source]
type = "dicomweb_poll"
url = "http://127.0.0.1:{pacs_port}"
username = "rb"
password_file = "{tmp / 'pacs.pw'}"
poll_interval_secs = 0.2

[[channel]]
name = "ehr-fhir"
[channel.destination]
type = "fhir_rest"
base_url = "http://127.0.0.1:9/fhir"
[channel.destination.auth]
type = "oauth2"
token_url = "http://127.0.0.1:9/token"
client_id = "radbridge"
client_secret_env = "RB_TEST_FHIR_SECRET"

[[channel]]
name = "sr-out"
[channel.destination]
type = "dicomweb_stow"
url = "http://127.0.0.1:9/dicom-web"
auth = "bearer"
token_env = "RB_TEST_STOW_TOKEN"

[[channel]]
name = "pager"
[channel.destination]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret_file = "{tmp / 'hook.key'}"
"""


async def test_api_config_shows_secret_references_and_never_a_secret_value(
        admin_engine: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_TEST_FHIR_SECRET", FHIR_SECRET)
    monkeypatch.setenv("RB_TEST_STOW_TOKEN", STOW_TOKEN)
    seen: list[str] = []
    pacs = await _pacs(seen)
    try:
        port = pacs.addresses[0][1]
        _, api = await admin_engine(config_text(tmp_path, channels=_channels(tmp_path, port)))
        await wait_for(lambda: bool(seen))
        assert seen[0] == "Basic " + base64.b64encode(f"rb:{PACS_PASSWORD}".encode()).decode()
        for role in ("analyst", "admin"):
            status, body = await api.call("GET", "/api/config", role)
            assert status == 200
            text = json.dumps(body)
            for secret in (PACS_PASSWORD, FHIR_SECRET, STOW_TOKEN, WEBHOOK_SECRET):
                assert secret not in text
            channels = {c["name"]: c for c in body["config"]["channel"]}
            assert channels["pacs"]["source"]["password_file"] == str(tmp_path / "pacs.pw")
            assert (channels["ehr-fhir"]["destination"]["auth"]["client_secret_env"]
                    == "RB_TEST_FHIR_SECRET")
            assert channels["sr-out"]["destination"]["token_env"] == "RB_TEST_STOW_TOKEN"
    finally:
        await pacs.cleanup()


async def test_a_rotated_password_file_is_used_at_the_next_poll(
        admin_engine: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_TEST_FHIR_SECRET", FHIR_SECRET)
    monkeypatch.setenv("RB_TEST_STOW_TOKEN", STOW_TOKEN)
    seen: list[str] = []
    pacs = await _pacs(seen)
    try:
        port = pacs.addresses[0][1]
        await admin_engine(config_text(tmp_path, channels=_channels(tmp_path, port)))
        await wait_for(lambda: bool(seen))
        (tmp_path / "pacs.pw").write_text("rotated-password-2")
        rotated = "Basic " + base64.b64encode(b"rb:rotated-password-2").decode()
        await wait_for(lambda: rotated in seen, timeout=30)
    finally:
        await pacs.cleanup()
