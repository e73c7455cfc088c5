"""Hardening, credentials class: one policy for every user and token (refused off loopback,
a warning on loopback), the first-run admin password of a fresh engine, login CSRF, the
CSRF comparison and the session cookie's Secure attribute."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.admin import auth
from engine.admin.__main__ import main as admin_cli
from engine.admin.auth import AdminCredentialsError, Directory, check_credentials, hash_password
from engine.admin.firstrun import first_run_password
from engine.config.schema import lint_text
from tests.conftest import REPO
from tests.e2e.support import PASSWORDS, Started, admin_engine, base_url, config_text, make_engine

__all__ = ["admin_engine"]
FAST = {"n": 2**10}  # cheap hashes: what is tested is which ones are probed, not their cost
OFF_LOOPBACK = ('listen = "127.0.0.1:0"\nstats', 'listen = "0.0.0.0:0"\nstats')


@pytest.mark.parametrize(
    "password",
    [
        "x",
        "   ",
        "admin123",
        "Password1",
        "administrator",
        "P@ssw0rd2024!!",
        "the-Admin-of-this-site",
    ],
)
def test_a_weak_admin_password_is_refused_off_loopback_naming_the_user_not_the_password(
    password: str,
) -> None:
    directory = Directory.from_env({"RADBRIDGE_ADMIN_PASSWORD": password})
    with pytest.raises(AdminCredentialsError, match="user 'admin'") as refused:
        check_credentials(directory, "0.0.0.0")
    if len(password.strip()) > 4:
        assert password not in str(refused.value)
    assert check_credentials(directory, "127.0.0.1")  # loopback: warnings, not a refusal


def _users_file(
    tmp_path: Path, users: dict[str, tuple[str, str]], tokens: dict[str, tuple[str, str]]
) -> Path:
    lines = []
    for name, (role, password) in users.items():
        lines += [
            "[[user]]",
            f'name = "{name}"',
            f'role = "{role}"',
            f'password = "{hash_password(password, **FAST)}"',
        ]
    for name, (role, token) in tokens.items():
        lines += [
            "[[token]]",
            f'name = "{name}"',
            f'role = "{role}"',
            f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"',
        ]
    path = tmp_path / "users.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_user_and_token_is_held_to_the_policy_not_only_the_admins(tmp_path: Path) -> None:
    path = _users_file(
        tmp_path,
        {
            "root": ("admin", "a long and unguessable phrase"),
            "ann": ("analyst", "ann123"),
            "vic": ("viewer", "Password1"),
            "rad": ("radiologist", ""),
        },
        {
            "ci": ("viewer", "changeme123"),
            "epic": ("ehr", "epic"),
            "prom": ("viewer", "rbt_" + "k" * 40),
        },
    )
    with pytest.raises(AdminCredentialsError) as refused:
        check_credentials(Directory.from_env({"RADBRIDGE_USERS_FILE": str(path)}), "10.1.2.3")
    named = set(re.findall(r"(?:user|token) '(\w+)'", str(refused.value)))
    assert named == {"ann", "vic", "rad", "ci", "epic"}


def test_strong_credentials_for_everyone_start_off_loopback(tmp_path: Path) -> None:
    path = _users_file(
        tmp_path,
        {
            "root": ("admin", "a long and unguessable phrase"),
            "ann": ("analyst", "correct horse battery staple"),
        },
        {"prom": ("viewer", "rbt_" + "k" * 40)},
    )
    env = {"RADBRIDGE_USERS_FILE": str(path), "RADBRIDGE_ADMIN_PASSWORD": "Tr0ub4dor&3-long!"}
    assert check_credentials(Directory.from_env(env), "0.0.0.0") == []


def test_a_hash_found_strong_is_not_probed_again_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = {
        "root": ("admin", "a long and unguessable phrase"),
        "ann": ("analyst", "correct horse battery staple"),
    }
    env = {"RADBRIDGE_USERS_FILE": str(_users_file(tmp_path, users, {}))}
    probed, tries = tmp_path / "admin-probed", []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda p, h: tries.append(p) or real(p, h))
    auth._guessed_hash.cache_clear()  # what a new process starts with
    assert check_credentials(Directory.from_env(env), "0.0.0.0", probed) == []
    assert len(tries) > 40 and stat.S_IMODE(probed.stat().st_mode) == 0o600
    tries.clear()
    auth._guessed_hash.cache_clear()
    assert check_credentials(Directory.from_env(env), "0.0.0.0", probed) == []
    assert tries == []  # both hashes were remembered
    users["ann"] = ("analyst", "Ann123")  # a new hash is probed, and found weak
    env["RADBRIDGE_USERS_FILE"] = str(_users_file(tmp_path, users, {}))
    with pytest.raises(AdminCredentialsError, match="user 'ann'"):
        check_credentials(Directory.from_env(env), "0.0.0.0", probed)
    assert tries and "Ann123" in tries


async def test_the_engine_refuses_to_start_off_loopback_when_any_user_is_weak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _users_file(
        tmp_path,
        {"root": ("admin", "a long and unguessable phrase"), "vic": ("viewer", "admin123")},
        {},
    )
    monkeypatch.setenv("RADBRIDGE_USERS_FILE", str(path))
    monkeypatch.delenv("RADBRIDGE_ADMIN_PASSWORD", raising=False)
    engine = make_engine(tmp_path, config_text(tmp_path).replace(*OFF_LOOPBACK))
    with pytest.raises(AdminCredentialsError, match="user 'vic'"):
        await engine.start()
    assert not engine.started and not engine.sources


async def test_a_weak_password_on_loopback_starts_with_a_warning_naming_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="radbridge")
    monkeypatch.delenv("RADBRIDGE_USERS_FILE", raising=False)
    monkeypatch.setenv("RADBRIDGE_ADMIN_PASSWORD", "Password1")
    engine = make_engine(tmp_path, config_text(tmp_path))
    await engine.start()
    await engine.stop()
    warnings = [r.getMessage() for r in caplog.records if "ADM-601" in r.getMessage()]
    assert warnings and "user 'admin'" in warnings[0]
    assert not any("Password1" in r.getMessage() for r in caplog.records)


def test_hash_password_refuses_what_the_policy_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Password1\n"))
    assert admin_cli(["hash-password", "--name", "ann"]) == 1
    assert "shorter than 12" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("ann-is-my-name-and-long\n"))
    assert admin_cli(["hash-password", "--name", "ann"]) == 1
    assert "contains the user name" in capsys.readouterr().err


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_the_first_run_password_file_is_0600_whatever_the_umask_and_reused(tmp_path: Path) -> None:
    with umask(0o277):  # would leave the file 0400, and a permissive one 0666
        path, password, created = first_run_password(tmp_path / "var", "admin")
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert len(password) >= 20 and path.read_text() == password + "\n"
    path.chmod(0o644)
    assert first_run_password(tmp_path / "var", "admin") == (path, password, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    link = tmp_path / "elsewhere"
    (link / "admin-password").parent.mkdir()
    (link / "admin-password").symlink_to(path)
    with pytest.raises(AdminCredentialsError, match="cannot use the admin password file"):
        first_run_password(link, "admin")


class Run:
    """``python -m engine.cli run CONFIG`` with no RADBRIDGE_* variables; stdout lines up to
    READY are kept, stderr (the logs) goes to a file."""

    def __init__(self, tmp_path: Path, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
        env["PYTHONPATH"] = str(REPO)
        self.logs = tmp_path / f"stderr-{len(list(tmp_path.glob('stderr-*')))}.log"
        with self.logs.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "run", str(config)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                preexec_fn=lambda: os.umask(0),
            )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.strip() == "READY":
                return
        raise AssertionError(f"no READY: {self.proc.wait(60)} {self.logs.read_text()[-2000:]}")

    def dashboard(self) -> tuple[str, Path]:
        (line,) = [x for x in self.lines if x.startswith("dashboard ")]
        found = re.fullmatch(
            r"dashboard (http://127\.0\.0\.1:\d+/) \(user admin, password "
            r"in (/.+)\)",
            line,
        )
        assert found, line
        return found.group(1), Path(found.group(2))

    def stop(self) -> str:
        self.proc.terminate()
        assert self.proc.wait(60) == 0
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return "\n".join(self.lines) + self.logs.read_text()


def _login(url: str, password: str) -> int:
    request = urllib.request.Request(
        url + "api/login",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": password}).encode(),
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_fresh_engine_on_loopback_makes_one_admin_password_file_to_log_in_with(
    tmp_path: Path,
) -> None:
    config = tmp_path / "channels.toml"
    config.write_text(config_text(tmp_path))
    first = Run(tmp_path, config)
    try:
        url, path = first.dashboard()
        assert path == (tmp_path / "var" / "admin-password").resolve()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # under umask 0
        password = path.read_text().strip()
        assert _login(url, password) == 200 and _login(url, password + "x") == 401
    finally:
        output = first.stop()
    assert password not in output  # neither printed nor logged
    second = Run(tmp_path, config)
    try:
        url, again = second.dashboard()
        assert again == path and path.read_text().strip() == password  # reused, not replaced
        assert _login(url, password) == 200
    finally:
        assert password not in second.stop()


async def test_off_loopback_no_credential_refuses_to_start_and_makes_no_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "RADBRIDGE_USERS_FILE",
        "RADBRIDGE_ADMIN_PASSWORD",
        "RADBRIDGE_ADMIN_PASSWORD_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    engine = make_engine(tmp_path, config_text(tmp_path).replace(*OFF_LOOPBACK))
    with pytest.raises(AdminCredentialsError, match="no admin user or token"):
        await engine.start()
    assert not (tmp_path / "var" / "admin-password").exists()


async def _post_login(engine: Any, data: str, content_type: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base_url(engine)}/api/login", data=data, headers={"Content-Type": content_type}
        ) as resp,
    ):
        return resp.status, resp.headers.get("Set-Cookie", "")


async def test_a_login_posted_as_text_plain_or_a_form_is_refused_with_415(
    admin_engine: Started,
) -> None:
    engine, _ = await admin_engine()
    body = json.dumps({"username": "admin", "password": PASSWORDS["admin"]})
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        assert await _post_login(engine, body, content_type) == (415, "")
    status, cookie = await _post_login(engine, body, "application/json; charset=utf-8")
    assert status == 200 and cookie.startswith("radbridge_session=")


async def test_the_csrf_token_is_compared_in_constant_time(
    admin_engine: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, api = await admin_engine()
    status, body = await api.call(
        "POST", "/api/login", json={"username": "analyst", "password": PASSWORDS["analyst"]}
    )
    assert status == 200
    compared: list[tuple[Any, Any]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    headers = {"X-CSRF-Token": "forged"}
    assert (await api.call("POST", "/api/channels/spare/stop", headers=headers))[0] == 403
    assert (b"forged", body["csrf"].encode()) in compared


async def test_secure_cookies_marks_the_session_cookie_secure_behind_a_tls_proxy(
    admin_engine: Started, tmp_path: Path
) -> None:
    body = json.dumps({"username": "admin", "password": PASSWORDS["admin"]})
    plain, _ = await admin_engine()
    status, cookie = await _post_login(plain, body, "application/json")
    assert status == 200 and "Secure" not in cookie  # plain HTTP, no setting: not Secure
    (tmp_path / "p").mkdir()
    proxied, _ = await admin_engine(config_text(tmp_path / "p", "secure_cookies = true"))
    status, cookie = await _post_login(proxied, body, "application/json")
    assert status == 200 and "Secure" in cookie and "HttpOnly" in cookie


def test_secure_cookies_is_linted_with_file_line_and_key(tmp_path: Path) -> None:
    _, problems = lint_text(config_text(tmp_path, 'secure_cookies = "often"'), "c.toml")
    assert [p.key for p in problems] == ["admin.secure_cookies"] and problems[0].line > 1
    tls = f'tls = {{ cert = "{REPO / "README.md"}", key = "{REPO / "README.md"}" }}\n'
    _, problems = lint_text(config_text(tmp_path, tls + "secure_cookies = false"), "c.toml")
    assert [p.key for p in problems] == ["admin.secure_cookies"]
    assert "plain HTTP" in problems[0].message
