"""Slow-drip and greedy clients on real sockets: MLLP, STOW-RS and the admin API.

A client that sends one byte at a time (slowloris), stray bytes outside any frame, or one
connection too many is cut within its configured bound, while a well-behaved client is
served at the same time. Timeouts are set to about a second so the tests stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
from pydicom.uid import generate_uid

from bench.hl7gen import adt_a01
from channels.mllp.client import MLLPClient
from channels.mllp.framing import START
from engine.httplimits import LINGER_MAX_SECS
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import read_ack
from tests.conftest import wait_for
from tests.e2e.support import Started, admin_engine, base_url, config_text
from tests.fixtures.certs import make_pki
from tests.fixtures.dicom import part10, synth_instance
from tests.integration.test_dicomweb import stow_config as dicomweb_stow_config

__all__ = ["admin_engine"]

TIMEOUT = 1.0  # every timeout under test
SLACK = 1.5  # the sweep interval plus a loaded two-core machine
# The server's clock starts when it accepts, which can be a little before the
# client's open_connection() returns and its own clock starts.
EARLY = 0.1
LINGER = min(LINGER_MAX_SECS, TIMEOUT)  # the drain of an unread body after an early answer
Addr = tuple[str, int]


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    out = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            out += chunk
    return out


async def drip(addr: Addr, head: bytes, byte: bytes = b"x", every: float = 0.1,
               limit: float = 10.0) -> tuple[float, bytes]:
    """Send *head*, then one *byte* every *every* seconds until the server closes.

    Returns the seconds until the server closed the connection and what it answered;
    fails if it was still open after *limit* seconds.
    """
    reader, writer = await asyncio.open_connection(*addr)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def feed() -> None:
        writer.write(head)
        while True:
            await asyncio.sleep(every)
            writer.write(byte)
            await writer.drain()

    feeder = asyncio.create_task(feed())
    try:
        answer = await asyncio.wait_for(_read_to_eof(reader), limit)
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return loop.time() - start, answer


def mllp_config(db_url: str, tls: str = "", **limits: float) -> str:
    extra = "".join(f", {k} = {v}" for k, v in limits.items()) + tls
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0"{extra} }}
"""


async def send_adt(addr: Addr, cid: str) -> str:
    client = MLLPClient(*addr, ack_timeout=10)
    try:
        code, acked, _ = read_ack(await client.send(adt_a01(cid)))
        return code if acked == cid else f"{code} for {acked}"
    finally:
        await client.close()


async def served_meanwhile(send: Any, seconds: float) -> list[Any]:
    """Answers to a well-behaved client asking every 0.2 s for *seconds*."""
    answers = []
    for i in range(int(seconds / 0.2)):
        answers.append(await send(i))
        await asyncio.sleep(0.2)
    return answers


# --- MLLP -----------------------------------------------------------------------------------


async def test_a_dripped_mllp_frame_is_cut_at_the_frame_timeout_while_others_are_served(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(mllp_config(db_url, frame_timeout_secs=TIMEOUT))
    addr = engine.address("ris")
    (took, answer), answers = await asyncio.gather(
        drip(addr, START + b"MSH|^~\\&|SLOW|", b"x"),
        served_meanwhile(lambda i: send_adt(addr, f"OK{i}"), TIMEOUT + 0.5))
    assert TIMEOUT - EARLY <= took < TIMEOUT + SLACK
    assert answer == b""  # no complete frame, nothing to answer: the sender will resend
    assert answers and set(answers) == {"AA"}
    stored = await engine.store.query_messages(MessageQuery(channel="ris"))
    assert all(not m.raw.startswith(b"MSH|^~\\&|SLOW") for m in stored)
    assert len(stored) == len(answers)


async def test_stray_bytes_outside_a_frame_do_not_keep_an_idle_connection_open(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(mllp_config(db_url, idle_timeout_secs=TIMEOUT))
    took, answer = await drip(engine.address("ris"), b"\r\n", b"?")
    assert TIMEOUT - EARLY <= took < TIMEOUT + SLACK and answer == b""


async def test_a_slow_but_steady_sender_of_whole_frames_is_not_cut(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(mllp_config(db_url, frame_timeout_secs=TIMEOUT,
                                              idle_timeout_secs=TIMEOUT))
    client = MLLPClient(*engine.address("ris"), ack_timeout=10)
    try:
        for i in range(4):  # one frame every 0.6 s: 2.4 s on one connection
            assert read_ack(await client.send(adt_a01(f"STEADY{i}")))[0] == "AA"
            await asyncio.sleep(0.6)
    finally:
        await client.close()


async def test_the_mllp_connection_beyond_the_limit_is_closed_and_the_others_keep_working(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(mllp_config(db_url, max_connections=3))
    addr = engine.address("ris")
    clients = [MLLPClient(*addr, ack_timeout=10) for _ in range(3)]
    try:
        for n, client in enumerate(clients):
            assert read_ack(await client.send(adt_a01(f"C{n}")))[0] == "AA"
        took, answer = await drip(addr, START + adt_a01("EXTRA"), b"", limit=2.0)
        assert took < 1.0 and answer == b""
        for n, client in enumerate(clients):  # the three open connections carry on
            assert read_ack(await client.send(adt_a01(f"D{n}")))[0] == "AA"
    finally:
        for client in clients:
            await client.close()
    stored = await engine.store.query_messages(MessageQuery(channel="ris"))
    assert sorted(m.control_id for m in stored) == ["C0", "C1", "C2", "D0", "D1", "D2"]


async def test_a_tls_handshake_that_never_comes_is_cut_at_the_frame_timeout(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = f', tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}" }}'
    engine = await engine_factory(mllp_config(db_url, tls, frame_timeout_secs=TIMEOUT))
    took, _ = await drip(engine.address("ris"), b"\x16\x03", b"\x01")  # a ClientHello drip
    assert TIMEOUT - EARLY <= took < TIMEOUT + SLACK


# --- STOW-RS --------------------------------------------------------------------------------

BOUNDARY = "slow-drip-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow_config(db_url: str, data_dir: Path, **limits: float) -> str:
    """test_dicomweb's STOW-RS channel with these HTTP limits on its source."""
    return dicomweb_stow_config(db_url, data_dir, "".join(f", {k} = {v}"
                                                          for k, v in limits.items()))


def one_instance() -> bytes:
    data = part10(synth_instance(generate_uid(), generate_uid(), 1))
    return (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{BOUNDARY}--\r\n".encode())


async def stow_one(http: aiohttp.ClientSession, addr: Addr) -> int:
    async with http.post(f"http://{addr[0]}:{addr[1]}/studies", data=one_instance(),
                         headers={"Content-Type": RELATED}) as resp:
        await resp.read()
        return resp.status


async def test_stow_headers_dripped_are_cut_at_the_header_timeout_while_others_store(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data",
                                              header_timeout_secs=TIMEOUT))
    addr = engine.address("web")
    async with aiohttp.ClientSession() as http:
        (took, answer), statuses = await asyncio.gather(
            drip(addr, b"POST /studies HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a"),
            served_meanwhile(lambda i: stow_one(http, addr), TIMEOUT + 0.5))
    assert TIMEOUT - EARLY <= took < TIMEOUT + SLACK and answer == b""
    assert statuses and set(statuses) == {200}


async def test_a_dripped_stow_body_is_answered_408_at_the_body_timeout(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data",
                                              body_timeout_secs=TIMEOUT))
    head = (f"POST /studies HTTP/1.1\r\nHost: x\r\nContent-Type: {RELATED}\r\n"
            f"Content-Length: 100000\r\n\r\n--{BOUNDARY}\r\n").encode()
    took, answer = await drip(engine.address("web"), head, b"z")
    assert TIMEOUT - EARLY <= took < TIMEOUT + LINGER + SLACK  # answered, then a capped drain
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"request body too slow" in answer


async def test_the_stow_connection_beyond_the_limit_gets_503_and_the_others_keep_working(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data", max_connections=2))
    addr = engine.address("web")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as http:
        assert await asyncio.gather(stow_one(http, addr), stow_one(http, addr)) == [200, 200]
        server = engine.sources["web"].runner.server
        await wait_for(lambda: len(server.connections) == 2)  # both kept alive
        took, answer = await drip(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", limit=2.0)
        assert took < 1.0 and answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert await asyncio.gather(stow_one(http, addr), stow_one(http, addr)) == [200, 200]
    assert engine.sources["web"].listener.refused == 1


# --- admin API ------------------------------------------------------------------------------


async def health(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/health") as resp:
        return resp.status


def _admin_addr(engine: Any) -> Addr:
    host, port = engine.admin.address
    return str(host), int(port)


async def test_admin_headers_and_bodies_dripped_are_cut_while_health_answers(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, _ = await admin_engine(config_text(
        tmp_path, f"header_timeout_secs = {TIMEOUT}\nbody_timeout_secs = {TIMEOUT}\n"))
    addr, url = _admin_addr(engine), base_url(engine)
    login = (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 4000\r\n\r\n{\"username\": \"")
    async with aiohttp.ClientSession() as http:
        (slow_head, head_answer), (slow_body, body_answer), statuses = await asyncio.gather(
            drip(addr, b"GET /api/session HTTP/1.1\r\nHost: x\r\nCookie: ", b"c"),
            drip(addr, login, b"a"),
            served_meanwhile(lambda i: health(http, url), TIMEOUT + 0.5))
    assert TIMEOUT - EARLY <= slow_head < TIMEOUT + SLACK and head_answer == b""
    assert TIMEOUT - EARLY <= slow_body < TIMEOUT + LINGER + SLACK
    assert body_answer.startswith(b"HTTP/1.1 408 "), body_answer[:80]
    assert statuses and set(statuses) == {200}


async def test_the_admin_connection_beyond_the_limit_gets_503_and_the_others_keep_working(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, _ = await admin_engine(config_text(tmp_path, "max_connections = 2\n"))
    addr, url = _admin_addr(engine), base_url(engine)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as http:
        assert await asyncio.gather(health(http, url), health(http, url)) == [200, 200]
        took, answer = await drip(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"",
                                  limit=2.0)
        assert took < 1.0 and answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert await asyncio.gather(health(http, url), health(http, url)) == [200, 200]
