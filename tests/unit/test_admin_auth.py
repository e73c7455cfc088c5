"""Users, tokens, password hashes, sessions and the login brake of the admin API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.admin import sessions as sessions_mod
from engine.admin.auth import (
    AdminCredentialsError,
    Directory,
    Principal,
    User,
    check_credentials,
    hash_password,
    hash_token,
    is_loopback,
    new_token,
    verify_password,
)
from engine.admin.sessions import SessionStore
from engine.admin.throttle import LoginThrottle, Ticket

FAST = {"n": 2**10}  # cheap hashes where the cost is not what is tested


def test_a_password_hash_verifies_only_the_same_password() -> None:
    encoded = hash_password("a long passphrase", **FAST)
    assert encoded.startswith("scrypt$1024$8$1$")
    assert verify_password("a long passphrase", encoded)
    assert not verify_password("a long passphrase!", encoded)
    assert not verify_password("x", "bcrypt$whatever") and not verify_password("x", "garbage")


def test_two_hashes_of_one_password_differ_by_their_salt() -> None:
    assert hash_password("same", **FAST) != hash_password("same", **FAST)


def test_tokens_are_random_and_stored_only_as_their_sha256() -> None:
    token = new_token()
    assert token.startswith("rbt_") and len(token) > 40 and new_token() != token
    directory = Directory(tokens={hash_token(token): ("ci", "viewer")})
    assert directory.token(token) == Principal("ci", "viewer", "token")
    assert directory.token(token + "x") is None


def test_the_users_file_gives_users_and_tokens_with_roles(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(f'[[user]]\nname = "ann"\nrole = "analyst"\npassword = '
                    f'"{hash_password("ann-secret-pass", **FAST)}"\n'
                    f'[[token]]\nname = "bot"\nrole = "viewer"\nsha256 = "{hash_token("t1")}"\n')
    directory = Directory.from_env({"RADBRIDGE_USERS_FILE": str(path)})
    assert directory.login("ann", "ann-secret-pass") == Principal("ann", "analyst", "session")
    assert directory.login("ann", "wrong") is None and directory.login("bob", "x") is None
    assert directory.token("t1") == Principal("bot", "viewer", "token")


@pytest.mark.parametrize("text,needle", [
    ('[[user]]\nname = "a"\nrole = "boss"\npassword = "scrypt$x"\n', "user[0]"),
    ('[[user]]\nname = "a"\nrole = "admin"\npassword = "plain"\n', "scrypt password hash"),
    ('[[token]]\nname = "t"\nrole = "viewer"\nsha256 = "abc"\n', "token[0]"),
    ("not toml [", "not valid TOML"),
])
def test_a_broken_users_file_is_refused_with_its_reason(tmp_path: Path, text: str,
                                                        needle: str) -> None:
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(AdminCredentialsError, match=needle.replace("[", r"\[")):
        Directory.from_env({"RADBRIDGE_USERS_FILE": str(path)})


def test_the_admin_password_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    env = Directory.from_env({"RADBRIDGE_ADMIN_PASSWORD": "env-password-123"})
    assert env.login("admin", "env-password-123") == Principal("admin", "admin", "session")
    secret = tmp_path / "pw"
    secret.write_text("file-password-123\n")
    named = Directory.from_env({"RADBRIDGE_ADMIN_PASSWORD_FILE": str(secret),
                                "RADBRIDGE_ADMIN_USER": "root2"})
    assert named.login("root2", "file-password-123") is not None
    with pytest.raises(AdminCredentialsError, match="cannot read"):
        Directory.from_env({"RADBRIDGE_ADMIN_PASSWORD_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize("password", ["", "admin", "password", "changeme", "Admin"])
def test_default_or_empty_admin_passwords_are_refused_off_loopback(password: str) -> None:
    directory = Directory.from_env({"RADBRIDGE_ADMIN_PASSWORD": password})
    with pytest.raises(AdminCredentialsError, match="refusing to serve the admin API on 0.0.0.0"):
        check_credentials(directory, "0.0.0.0")
    assert check_credentials(directory, "127.0.0.1")  # loopback: a warning, not a refusal


def test_a_default_password_hidden_in_a_hash_is_found_off_loopback() -> None:
    directory = Directory([User("root", "admin", hash_password("changeme", **FAST))])
    with pytest.raises(AdminCredentialsError, match="'root'"):
        check_credentials(directory, "10.1.2.3")


def test_no_admin_at_all_is_refused_off_loopback_and_a_strong_one_passes() -> None:
    with pytest.raises(AdminCredentialsError, match="no admin user or token"):
        check_credentials(Directory(), "::")
    strong = Directory.from_env({"RADBRIDGE_ADMIN_PASSWORD": "a-strong-and-long-one"})
    assert check_credentials(strong, "0.0.0.0") == []


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
                                       ("localhost", True), ("0.0.0.0", False), ("::", False),
                                       ("10.0.0.1", False), ("radbridge.example", False)])
def test_loopback_means_only_the_loopback_range(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_a_session_expires_when_idle_and_when_too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sessions_mod.time, "monotonic", lambda: now[0])
    store = SessionStore(idle_secs=60, max_secs=100)
    token, session = store.create(Principal("a", "admin", "session"))
    assert store.get(token) is session and store.get("other") is None
    now[0] += 59
    assert store.get(token) is session
    now[0] += 59  # 118 s old: past the absolute limit although not idle
    assert store.get(token) is None
    token, _ = store.create(Principal("a", "admin", "session"))
    now[0] += 61
    assert store.get(token) is None
    token, _ = store.create(Principal("a", "admin", "session"))
    store.drop(token)
    assert store.get(token) is None


def test_the_login_brake_holds_one_name_from_one_client_after_five_failures() -> None:
    throttle = LoginThrottle(pair_failures=5, window_secs=300)
    for _ in range(5):
        assert isinstance(throttle.reserve("eve", "10.0.0.9"), Ticket)  # each one a failure
    assert 0 < throttle.reserve("eve", "10.0.0.9") <= 300  # type: ignore[operator]
    assert isinstance(throttle.reserve("ann", "10.0.0.9"), Ticket)
    ticket = throttle.reserve("eve", "10.0.0.1")  # the same name from elsewhere
    assert isinstance(ticket, Ticket)
    throttle.succeeded(ticket)
    assert isinstance(throttle.reserve("eve", "10.0.0.1"), Ticket)


def test_scrypt_costs_enough_to_slow_guessing() -> None:
    encoded = hash_password("x" * 16)
    start = time.perf_counter()
    verify_password("y" * 16, encoded)
    assert time.perf_counter() - start > 0.005
