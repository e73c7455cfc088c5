"""Access to the admin listener: login sessions, CSRF, throttling, credentials, TLS, headers,
and the admin listener of a real ``radbridge run`` process."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.admin.auth import AdminCredentialsError
from tests.conftest import REPO
from tests.e2e.support import (
    PASSWORDS,
    Api,
    Started,
    admin_engine,
    config_text,
    make_engine,
    write_users_file,
)
from tests.fixtures.certs import make_pki

__all__ = ["admin_engine"]


async def _login(api: Api, role: str) -> str:
    status, body = await api.call("POST", "/api/login",
                                  json={"username": role, "password": PASSWORDS[role]})
    assert status == 200, body
    return str(body["csrf"])


async def test_a_login_session_works_and_changes_need_the_csrf_token(
        admin_engine: Started) -> None:
    _, api = await admin_engine()
    csrf = await _login(api, "analyst")
    status, me = await api.call("GET", "/api/session")
    assert status == 200 and (me["user"], me["role"], me["csrf"]) == ("analyst", "analyst", csrf)
    assert "stop_channel" in me["operations"] and "audit_log" not in me["operations"]
    assert [p["id"] for p in me["panels"]][:2] == ["channels", "messages"]
    assert (await api.call("POST", "/api/channels/spare/stop"))[0] == 403
    assert (await api.call("POST", "/api/channels/spare/stop",
                           headers={"X-CSRF-Token": "forged"}))[0] == 403
    assert (await api.call("POST", "/api/channels/spare/stop",
                           headers={"X-CSRF-Token": csrf}))[0] == 200
    assert (await api.call("POST", "/api/logout", headers={"X-CSRF-Token": csrf}))[0] == 200
    assert (await api.call("GET", "/api/session"))[0] == 401


async def test_a_wrong_password_is_refused_audited_and_throttled(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    for _ in range(5):
        status, body = await api.call("POST", "/api/login",
                                      json={"username": "admin", "password": "guess"})
        assert status == 401 and body["error"] == "wrong user name or password"
    status, body = await api.call("POST", "/api/login",
                                  json={"username": "admin", "password": PASSWORDS["admin"]})
    assert status == 429 and body["retry_after_secs"] > 0
    await api.call("POST", "/api/login", json={"username": "nobody", "password": "x"})
    entries = await engine.admin.state.audit.query(action="login.failed")
    assert [e.user for e in entries][:2] == ["(unknown)", "admin"] and len(entries) == 6
    assert (await _login(api, "viewer"))  # other names are not held back


async def test_the_ehr_role_gets_no_dashboard_session_but_its_token_reads_fhir(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    status, body = await api.call("POST", "/api/login",
                                  json={"username": "ehr", "password": PASSWORDS["ehr"]})
    assert status == 403 and "API tokens" in body["error"]
    assert (await api.call("GET", "/api/session"))[0] == 401  # no cookie was set
    assert [e.user for e in await engine.admin.state.audit.query(action="login.refused")] == \
        ["ehr"]
    assert (await api.call("GET", "/fhir/metadata", "ehr"))[0] == 200
    assert (await api.call("GET", "/api/worklist", "ehr"))[0] == 403


async def test_a_viewer_session_sees_masked_data_and_cannot_change_anything(
        admin_engine: Started) -> None:
    _, api = await admin_engine()
    csrf = await _login(api, "viewer")
    _, me = await api.call("GET", "/api/session")
    assert me["masked"] is True and "reprocess_messages" not in me["operations"]
    status, _ = await api.call("POST", "/api/channels/ris/stop", headers={"X-CSRF-Token": csrf})
    assert status == 403


async def test_an_unknown_token_is_401_with_a_bearer_challenge(admin_engine: Started) -> None:
    engine, _ = await admin_engine()
    host, port = engine.admin.address
    async with aiohttp.ClientSession() as http, http.get(
            f"http://{host}:{port}/api/channels",
            headers={"Authorization": "Bearer rbt_not-a-token"}) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_dashboard_needs_a_login_and_is_served_with_a_strict_csp(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    host, port = engine.admin.address
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{host}:{port}/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/login"
        async with http.get(f"http://{host}:{port}/login") as resp:
            assert resp.status == 200 and "script-src 'self'" in resp.headers[
                "Content-Security-Policy"]
        async with http.get(f"http://{host}:{port}/ui/js/app.js") as resp:
            assert resp.status == 200 and "javascript" in resp.headers["Content-Type"]
    await _login(api, "viewer")
    status, page = await api.call("GET", "/")
    assert status == 200 and "/ui/js/app.js" in page


async def test_the_admin_listener_serves_https_with_secure_cookies(
        admin_engine: Started, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    engine, _ = await admin_engine(config_text(
        tmp_path, f'tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}" }}'))
    host, port = engine.admin.address
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    async with aiohttp.ClientSession() as http, http.post(
            f"https://localhost:{port}/api/login", ssl=ctx,
            json={"username": "admin", "password": PASSWORDS["admin"]}) as resp:
        assert resp.status == 200
        assert "Secure" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]


async def test_the_engine_refuses_default_admin_credentials_off_loopback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RADBRIDGE_USERS_FILE", raising=False)
    text = config_text(tmp_path).replace('listen = "127.0.0.1:0"\nstats',
                                         'listen = "0.0.0.0:0"\nstats')
    for password in ("admin", "", "changeme"):
        monkeypatch.setenv("RADBRIDGE_ADMIN_PASSWORD", password)
        engine = make_engine(tmp_path, text)
        with pytest.raises(AdminCredentialsError, match="refusing to serve"):
            await engine.start()
        assert not engine.started and not engine.sources
    monkeypatch.delenv("RADBRIDGE_ADMIN_PASSWORD")
    with pytest.raises(AdminCredentialsError, match="no admin user or token"):
        await make_engine(tmp_path, text).start()


async def test_loopback_starts_without_credentials_and_answers_401(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RADBRIDGE_USERS_FILE", raising=False)
    monkeypatch.delenv("RADBRIDGE_ADMIN_PASSWORD", raising=False)
    engine = make_engine(tmp_path, config_text(tmp_path))
    await engine.start()
    api = Api(f"http://{engine.admin.address[0]}:{engine.admin.address[1]}")
    try:
        assert (await api.call("GET", "/api/channels"))[0] == 401
        assert (await api.call("GET", "/health"))[0] == 200
    finally:
        await api.close()
        await engine.stop()


def _env(tmp_path: Path, cli_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env.items() if not k.startswith("RADBRIDGE_")}
    env.update(extra)
    return env


def test_radbridge_run_prints_the_admin_listener_and_serves_it(
        tmp_path: Path, engine_process: Any, cli_env: dict[str, str]) -> None:
    import urllib.request

    config = tmp_path / "channels.toml"
    config.write_text(config_text(tmp_path))
    users = write_users_file(tmp_path / "users.toml")
    proc = engine_process(config)
    proc.env = _env(tmp_path, cli_env, RADBRIDGE_USERS_FILE=str(users))
    proc.start()
    host, port = proc.addresses["admin"]
    assert host == "127.0.0.1" and port > 0 and "ris" in proc.addresses
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=10) as resp:
        assert resp.status == 200
    assert proc.terminate() == 0


def test_radbridge_run_exits_when_admin_credentials_are_weak_off_loopback(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    config = tmp_path / "channels.toml"
    config.write_text(config_text(tmp_path).replace('listen = "127.0.0.1:0"\nstats',
                                                    'listen = "0.0.0.0:0"\nstats'))
    env = _env(tmp_path, cli_env, RADBRIDGE_ADMIN_PASSWORD="password")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to serve the admin API on 0.0.0.0" in done.stderr
    assert "READY" not in done.stdout
