"""Hardening, throttle class: the login brake reserves before hashing, holds per client,
never lets a guesser lock the admin out from elsewhere, and unauthenticated logins cannot
make the engine hold memory (bounded bodies, names and tables).

Hash calls are counted by wrapping the running engine's ``Directory.login`` (the only
place a password is hashed); the second client address is 127.0.0.2 on loopback.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from engine.admin.auth import Directory, Principal
from engine.admin.throttle import LoginThrottle, Ticket
from tests.e2e.support import PASSWORDS, Started, admin_engine, base_url, config_text

__all__ = ["admin_engine"]
HANG_GUARD = 60.0  # only against a hang: no assertion depends on how fast the machine is


def count_hashes(engine: Any) -> list[str]:
    """Wrap the engine's password check; the returned list grows by one name per hash."""
    directory: Directory = engine.admin.state.directory
    checked: list[str] = []
    lock = threading.Lock()
    real: Callable[[str, str], Principal | None] = directory.login

    def login(name: str, password: str) -> Principal | None:
        with lock:
            checked.append(name)
        return real(name, password)

    directory.login = login  # type: ignore[method-assign]
    return checked


async def post_login(
    http: aiohttp.ClientSession, url: str, name: str, password: str
) -> tuple[int, str | None]:
    async with http.post(f"{url}/api/login", json={"username": name, "password": password}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


def client_from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections leave from *address* (another client on loopback)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=0))


async def test_a_hundred_concurrent_wrong_guesses_are_hashed_five_times_the_rest_get_429(
    admin_engine: Started, tmp_path: Path
) -> None:
    # 100 connections at once from one address: above the per-address connection limit
    # (64 by default, answered 503 before any login is read), so raise it here to let every
    # guess reach the throttle, which is what this test is about.
    engine, _ = await admin_engine(config_text(tmp_path, "max_connections_per_peer = 128\n"))
    checked, url = count_hashes(engine), base_url(engine)
    async with client_from("127.0.0.1") as http:
        answers = await asyncio.wait_for(
            asyncio.gather(*(post_login(http, url, "admin", f"guess-{i}") for i in range(100))),
            HANG_GUARD,
        )
    statuses = sorted(status for status, _ in answers)
    assert len(checked) == 5, f"{len(checked)} guesses were hashed"
    assert statuses == [401] * 5 + [429] * 95
    assert all(int(after or 0) > 0 for status, after in answers if status == 429)


async def test_the_admin_still_logs_in_from_another_address_while_a_guesser_is_locked_out(
    admin_engine: Started,
) -> None:
    engine, _ = await admin_engine()
    url = base_url(engine)
    async with client_from("127.0.0.1") as guesser, client_from("127.0.0.2") as admin:
        for _ in range(5):
            assert (await post_login(guesser, url, "admin", "wrong"))[0] == 401
        status, after = await post_login(guesser, url, "admin", PASSWORDS["admin"])
        assert status == 429 and int(after or 0) > 0  # held back, even with the password
        assert (await post_login(admin, url, "admin", PASSWORDS["admin"]))[0] == 200


async def test_one_client_guessing_many_names_is_stopped_after_twenty_failures(
    admin_engine: Started,
) -> None:
    engine, _ = await admin_engine()
    checked, url = count_hashes(engine), base_url(engine)
    async with client_from("127.0.0.1") as http:
        answers = await asyncio.wait_for(
            asyncio.gather(*(post_login(http, url, f"user{i}", "wrong") for i in range(40))),
            HANG_GUARD,
        )
        assert (await post_login(http, url, "viewer", PASSWORDS["viewer"]))[0] == 429
    assert len(checked) == 20
    assert sorted(status for status, _ in answers) == [401] * 20 + [429] * 20
    async with client_from("127.0.0.2") as other:
        assert (await post_login(other, url, "viewer", PASSWORDS["viewer"]))[0] == 200


def test_a_name_guessed_from_many_addresses_is_slowed_to_one_check_a_second_never_locked() -> None:
    now = [1000.0]
    throttle = LoginThrottle(name_failures=10, name_interval_secs=1.0, clock=lambda: now[0])
    for i in range(10):  # ten addresses, one wrong guess each
        assert isinstance(throttle.reserve("admin", f"10.0.0.{i}"), Ticket)
    assert isinstance(throttle.reserve("admin", "10.0.1.1"), Ticket)  # one check now...
    assert throttle.reserve("admin", "10.0.1.2") == 1.0  # ...the next one a second later
    now[0] += 1.0
    ticket = throttle.reserve("admin", "192.168.1.5")  # the owner, from a clean address
    assert isinstance(ticket, Ticket)
    throttle.succeeded(ticket)
    assert isinstance(throttle.reserve("ann", "10.0.1.2"), Ticket)  # other names: untouched


def test_a_successful_login_gives_its_reservation_back() -> None:
    throttle = LoginThrottle(client_failures=3, clock=lambda: 5.0)
    for _ in range(10):
        ticket = throttle.reserve("ann", "10.0.0.1")
        assert isinstance(ticket, Ticket)
        throttle.succeeded(ticket)
    assert throttle.sizes()["clients"] == 0 and throttle.sizes()["pairs"] == 0


def test_the_throttle_tables_are_bounded_and_forget_what_is_older_than_the_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_entries=100, window_secs=300, clock=lambda: now[0])
    for i in range(5000):  # a flood of names from a flood of addresses
        throttle.reserve("x" * 64 + str(i), f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert max(throttle.sizes().values()) <= 100
    now[0] += 300
    for i in range(100):  # looking a key up after its window drops it
        throttle.reserve("x" * 64 + str(4900 + i), "10.9.9.9")
    assert throttle.sizes()["pairs"] == 20 and throttle.sizes()["clients"] == 1  # swept
    assert LoginThrottle.name_key("n" * 4_000_000) == LoginThrottle.name_key("n" * 4_000_000)
    assert len(LoginThrottle.name_key("n" * 4_000_000)) == 16  # keys never hold the name


async def raw_request(url: str, head: bytes, body: bytes) -> bytes:
    """Send a request's head and the first bytes of its body; read whatever comes back."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), HANG_GUARD)
    finally:
        writer.close()


async def test_a_login_body_over_4_kib_is_refused_with_413_before_it_is_read(
    admin_engine: Started,
) -> None:
    engine, _ = await admin_engine()
    checked, url = count_hashes(engine), base_url(engine)
    head = (
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8000000\r\n\r\n"
    )
    answer = await raw_request(url, head, b'{"username": "' + b"a" * 1000)  # never finished
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert b"larger than 4096 bytes" in answer
    chunked = (
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = await raw_request(url, chunked, b"1388\r\n" + b"a" * 5000 + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert checked == [] and max(engine.admin.state.throttle.sizes().values()) == 0


async def test_a_user_name_over_64_characters_is_refused_before_any_lookup(
    admin_engine: Started,
) -> None:
    engine, api = await admin_engine()
    checked = count_hashes(engine)
    for i in range(20):
        status, body = await api.call(
            "POST", "/api/login", json={"username": f"{i}" + "n" * 4000, "password": "x"}
        )
        assert status == 400 and "64 characters" in body["error"]
    status, _ = await api.call("POST", "/api/login", json={"username": "n" * 64, "password": "x"})
    assert status == 401
    assert checked == ["n" * 64]
    assert engine.admin.state.throttle.sizes() == {
        "pairs": 1,
        "clients": 1,
        "names": 1,
        "name_slots": 0,
    }
