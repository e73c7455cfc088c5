"""Connection and buffer exhaustion on real sockets: MLLP, STOW-RS and the admin API.

Issue 12, finding 7: 1,024 idle MLLP connections from one address locked out the real RIS,
256 idle HTTP connections locked out the admin API and STOW-RS, and each MLLP connection
could buffer up to ``max_message_bytes``. Each listener now has a per-address connection
limit, an optional allow-list, and the MLLP listener a total buffer budget. The second
client connects from 127.0.0.2, another loopback address. Also here: a connection over an
HTTP limit gets the documented 503 under uvloop as well as under asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from bench.hl7gen import adt_a01
from channels.mllp.framing import END, HEAD_KEEP, START, MLLPFramer, Oversized, frame
from engine.config.schema import lint_text
from engine.flow.runtime import Engine
from engine.peers import LIMIT, NOT_ALLOWED, PEER_LIMIT, PeerGate, PeerLimitsConfig, peer_ip
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import read_ack
from tests.conftest import make_config, wait_for
from tests.e2e.support import Started, admin_engine, config_text
from tests.integration.test_dicomweb import stow_config

__all__ = ["admin_engine"]

OTHER = "127.0.0.2"  # a second loopback address: another peer
Addr = tuple[str, int]


def mllp_config(tmp_path: Path, **source: Any) -> str:
    extra = "".join(f", {k} = {_toml(v)}" for k, v in source.items())
    return f"""
[store]
url = "sqlite:///{tmp_path / "rb.db"}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0"{extra} }}
"""


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)


async def connect(addr: Addr, source: str = "127.0.0.1") -> Any:
    return await asyncio.open_connection(*addr, local_addr=(source, 0))


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """True if the server closes the connection without sending a byte."""
    with contextlib.suppress(ConnectionError):
        return await asyncio.wait_for(reader.read(65536), 5) == b""
    return True


async def still_open(reader: asyncio.StreamReader) -> bool:
    """True if the server has neither closed nor answered within a short while."""
    try:
        await asyncio.wait_for(reader.read(1), 0.3)
    except TimeoutError:
        return True
    return False


async def close_all(conns: list[Any]) -> None:
    for _, writer in conns:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def mllp_ack(addr: Addr, payload: bytes, source: str = "127.0.0.1") -> tuple[str, str, str]:
    reader, writer = await connect(addr, source)
    try:
        writer.write(frame(payload))
        data = await asyncio.wait_for(reader.readuntil(END), 10)
        return read_ack(data[1:-2])
    finally:
        await close_all([(reader, writer)])


async def read_acks(reader: asyncio.StreamReader, n: int) -> list[tuple[str, str, str]]:
    return [read_ack((await asyncio.wait_for(reader.readuntil(END), 10))[1:-2]) for _ in range(n)]


# --- MLLP: per-peer limit and allow-list ------------------------------------------------------


async def test_one_address_with_many_idle_mllp_connections_cannot_block_a_second_address(
    engine_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    engine = await engine_factory(
        mllp_config(tmp_path, max_connections=8, max_connections_per_peer=4)
    )
    addr = engine.address("ris")
    greedy = [await connect(addr) for _ in range(10)]  # idle, from 127.0.0.1
    try:
        kept = [await still_open(r) for r, _ in greedy[:4]]
        cut = [await closed_unanswered(r) for r, _ in greedy[4:]]
        assert all(kept) and all(cut)
        assert (await mllp_ack(addr, adt_a01("RIS1"), OTHER))[:2] == ("AA", "RIS1")
    finally:
        await close_all(greedy)
    assert sum("MLLP-108" in r.getMessage() for r in caplog.records) == 6


async def test_the_mllp_allow_list_closes_other_addresses_at_once_and_logs_them(
    engine_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    engine = await engine_factory(mllp_config(tmp_path, allow=[f"{OTHER}/32", "10.0.0.0/8"]))
    addr = engine.address("ris")
    reader, writer = await connect(addr)  # 127.0.0.1: not on the list
    writer.write(frame(adt_a01("NOPE")))
    try:
        assert await closed_unanswered(reader)
    finally:
        await close_all([(reader, writer)])
    assert (await mllp_ack(addr, adt_a01("YES"), OTHER))[:2] == ("AA", "YES")
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLLP-107")]
    assert len(refused) == 1 and "peer=127.0.0.1:" in refused[0]
    stored = await engine.store.query_messages(MessageQuery(channel="ris"))
    assert [m.control_id for m in stored] == ["YES"]  # nothing read from the refused one


async def test_ipv6_connections_count_per_64_on_a_real_ipv6_listener(
    engine_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Loopback has one IPv6 address, so one /64 (::/64): the other addresses of a /64 are
    # unit-tested (tests/unit/test_hardening_exhaustion.py). ::1 must be bindable here.
    caplog.set_level(logging.INFO, logger="radbridge")
    text = mllp_config(tmp_path, max_connections_per_peer=2).replace("127.0.0.1:0", "[::1]:0")
    engine = await engine_factory(text)
    addr = engine.address("ris")
    held = [await asyncio.open_connection(*addr[:2]) for _ in range(3)]
    try:
        assert [await still_open(r) for r, _ in held[:2]] == [True, True]
        assert await closed_unanswered(held[2][0])
        assert dict(engine.sources["ris"].gate.open) == {ipaddress.ip_network("::/64"): 2}
    finally:
        await close_all(held)
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLLP-108")]
    assert len(refused) == 1 and "peer=::1:" in refused[0]


# --- MLLP: the buffer budget ------------------------------------------------------------------


def padded(control_id: str, size: int) -> bytes:
    """An ADT^A01 made exactly *size* bytes long with a Z-segment."""
    msg = adt_a01(control_id) + b"\rZPD|"
    return msg + b"x" * (size - len(msg))


async def test_the_frame_that_takes_the_mllp_buffer_budget_over_is_answered_ar_and_others_aa(
    engine_factory: Any, tmp_path: Path
) -> None:
    engine = await engine_factory(
        mllp_config(tmp_path, max_message_bytes=5000, max_buffer_bytes=6000)
    )
    source, addr = engine.sources["ris"], engine.address("ris")
    a, b = await connect(addr), await connect(addr, OTHER)
    try:
        big_a, big_b = padded("A1", 4000), padded("B2", 3000)
        a[1].write(START + big_a)  # 4,000 bytes held, under the budget
        await wait_for(lambda: source.buffered == 4000)
        # One complete frame, then 3,000 bytes of an unfinished one: 7,000 > 6,000.
        b[1].write(frame(adt_a01("B1")) + START + big_b)
        await wait_for(lambda: source.shed == 1)
        assert source.buffered <= 4000 + 4096  # A's frame and at most B's kept head
        b[1].write(END)
        (b1, b2) = await read_acks(b[0], 2)
        assert b1[:2] == ("AA", "B1")  # complete frames are answered as usual
        assert b2[:2] == ("AR", "B2") and "buffer for unfinished messages was full" in b2[2]
        a[1].write(END)
        assert (await read_acks(a[0], 1))[0][:2] == ("AA", "A1")  # not shed: under the budget
        assert source.buffered == 0
    finally:
        await close_all([a, b])
    stored = {m.control_id: m for m in await engine.store.query_messages(MessageQuery())}
    assert stored["A1"].raw == big_a and stored["B1"].status != "ERROR"
    assert stored["B2"].status == "ERROR" and stored["B2"].raw == big_b[:4096]


async def test_bytes_of_closed_connections_leave_the_mllp_buffer_budget(
    engine_factory: Any, tmp_path: Path
) -> None:
    engine = await engine_factory(
        mllp_config(tmp_path, max_message_bytes=5000, max_buffer_bytes=6000)
    )
    source, addr = engine.sources["ris"], engine.address("ris")
    reader, writer = await connect(addr)
    writer.write(START + padded("GONE", 4000))
    await wait_for(lambda: source.buffered == 4000)
    await close_all([(reader, writer)])
    await wait_for(lambda: source.buffered == 0)
    b = await connect(addr, OTHER)  # the whole budget is free again
    try:
        b[1].write(START + padded("B3", 4500))
        await wait_for(lambda: source.buffered == 4500)
        b[1].write(END)
        assert (await read_acks(b[0], 1))[0][:2] == ("AA", "B3") and source.shed == 0
    finally:
        await close_all([b])


def test_a_shed_frame_keeps_its_head_and_is_reported_once_its_end_arrives() -> None:
    framer = MLLPFramer(max_size=100_000)
    framer.feed(START + padded("S1", 20_000))
    assert framer.held == 20_000 and framer.shed() and not framer.shed()
    assert framer.held <= HEAD_KEEP
    framer.feed(b"y" * 50_000)  # the rest is discarded as it arrives
    assert framer.held <= HEAD_KEEP
    (event,) = framer.feed(END)
    assert isinstance(event, Oversized) and event.shed and event.size == 70_000
    assert event.head == padded("S1", 20_000)[:HEAD_KEEP] and framer.oversized == 0
    assert framer.held == 0 and not framer.shed()  # nothing unfinished to shed


def test_a_frame_shed_just_before_its_end_keeps_only_its_own_bytes_as_head() -> None:
    # Found by bench.fuzz_mllp: a lone FS at the end of the buffer may be the frame's end;
    # it must not be kept in the head of the shed frame.
    framer = MLLPFramer(max_size=100_000)
    framer.feed(START + b"MSH|abc\x1c")
    assert framer.shed()
    (event,) = framer.feed(b"\r")
    assert isinstance(event, Oversized) and (event.head, event.size) == (b"MSH|abc", 7)


def test_the_peer_gate_counts_each_address_and_frees_a_slot_on_release() -> None:
    gate = PeerGate(3, PeerLimitsConfig(max_connections_per_peer=2, allow=["127.0.0.0/8"]))
    one, two = peer_ip(("127.0.0.1", 5)), peer_ip(("::ffff:127.0.0.2", 6, 0, 0))
    assert [gate.admit(one), gate.admit(one), gate.admit(one)] == [None, None, PEER_LIMIT]
    assert [gate.admit(two), gate.admit(two)] == [None, LIMIT]  # mapped IPv4 matches the list
    assert gate.admit(peer_ip(("10.1.1.1", 7))) == NOT_ALLOWED
    assert gate.admit(peer_ip(("::1", 8, 0, 0))) == NOT_ALLOWED
    assert gate.admit(None) == NOT_ALLOWED  # no address (a Unix socket) is not on the list
    gate.release(one)
    assert gate.admit(one) is None and dict(gate.open) == {one: 2, two: 1}


# --- HTTP: per-peer limit and allow-list ------------------------------------------------------


async def http_status(addr: Addr, source: str, path: str = "/health") -> bytes:
    """The status line answered to one GET from *source* (b"" if closed unanswered)."""
    reader, writer = await connect(addr, source)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            return (await asyncio.wait_for(reader.read(65536), 5)).split(b"\r\n", 1)[0]
        return b""
    finally:
        await close_all([(reader, writer)])


async def test_one_address_with_idle_admin_connections_cannot_block_a_second_address(
    admin_engine: Started, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    engine, _ = await admin_engine(
        config_text(tmp_path, "max_connections = 4\nmax_connections_per_peer = 2\n")
    )
    addr = engine.admin.address
    idle = [await connect(addr) for _ in range(2)]
    try:
        await wait_for(lambda: engine.admin.listener.gate.total == 2)
        assert await http_status(addr, "127.0.0.1") == b"HTTP/1.1 503 Service Unavailable"
        assert await http_status(addr, OTHER) == b"HTTP/1.1 200 OK"
    finally:
        await close_all(idle)
    assert any(r.getMessage().startswith("HTTP-106") for r in caplog.records)


async def test_one_address_with_idle_stow_connections_cannot_block_a_second_address(
    engine_factory: Any, tmp_path: Path
) -> None:
    engine = await engine_factory(
        stow_config(
            f"sqlite:///{tmp_path / 'rb.db'}",
            tmp_path / "data",
            ", max_connections = 3, max_connections_per_peer = 2",
        )
    )
    addr = engine.address("web")
    idle = [await connect(addr) for _ in range(3)]
    try:
        assert await closed_or_503(idle[2][0])
        assert await http_status(addr, OTHER, "/nothing") == b"HTTP/1.1 404 Not Found"
    finally:
        await close_all(idle)


async def closed_or_503(reader: asyncio.StreamReader) -> bool:
    answer = await asyncio.wait_for(reader.read(65536), 5)
    return answer.startswith(b"HTTP/1.1 503 ")


async def test_the_stow_allow_list_closes_other_addresses_unanswered(
    engine_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    engine = await engine_factory(
        stow_config(f"sqlite:///{tmp_path / 'rb.db'}", tmp_path / "data", f', allow = ["{OTHER}"]')
    )
    addr = engine.address("web")
    assert await http_status(addr, "127.0.0.1", "/nothing") == b""
    assert await http_status(addr, OTHER, "/nothing") == b"HTTP/1.1 404 Not Found"
    assert any(r.getMessage().startswith("HTTP-105") for r in caplog.records)


async def test_the_admin_allow_list_closes_other_addresses_unanswered(
    admin_engine: Started, tmp_path: Path
) -> None:
    engine, _ = await admin_engine(config_text(tmp_path, f'allow = ["{OTHER}"]\n'))
    addr = engine.admin.address
    assert await http_status(addr, "127.0.0.1") == b""
    assert await http_status(addr, OTHER) == b"HTTP/1.1 200 OK"


# --- lint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            ', allow = ["10.0.0.0/8", "intranet"]',
            "channel[0].source.allow",
            "'intranet' is not an IP address or CIDR network",
        ),
        (
            ", max_connections_per_peer = 0",
            "channel[0].source.max_connections_per_peer",
            "greater than or equal to 1",
        ),
        (
            ", max_message_bytes = 4096, max_buffer_bytes = 2048",
            "channel[0].source",
            "max_buffer_bytes (2048) is smaller than max_message_bytes (4096)",
        ),
    ],
)
def test_bad_listener_limits_are_lint_errors_naming_the_key(
    extra: str, key: str, message: str
) -> None:
    text = f'[[channel]]\nname = "ris"\nsource = {{ type = "mllp", listen = ":2575"{extra} }}\n'
    _, problems = lint_text(text, "c.toml")
    assert [(p.line, p.key) for p in problems] == [(3, key)] and message in problems[0].message


def test_a_bad_admin_allow_entry_is_a_lint_error() -> None:
    _, problems = lint_text('[admin]\nallow = ["300.1.1.1"]\n', "c.toml")
    assert [(p.line, p.key) for p in problems] == [(2, "admin.allow")]


# --- HTTP: the 503 under any event loop ---------------------------------------------------------

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.mark.parametrize("loop", list(LOOPS))
def test_the_http_connection_over_the_limit_gets_the_documented_503_under_every_loop(
    loop: str, tmp_path: Path
) -> None:
    text = stow_config(
        f"sqlite:///{tmp_path / 'rb.db'}", tmp_path / "data", ", max_connections = 1"
    )
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        answer = runner.run(_over_the_limit(make_config(text)))
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer[:80]
    assert b"Connection: close" in answer and answer.endswith(b"too many connections, retry.\n")


async def _over_the_limit(config: Any) -> bytes:
    engine = Engine(config)
    await engine.start()
    try:
        addr = engine.address("web")
        async with aiohttp.ClientSession() as http:  # one kept-alive connection: the limit
            async with http.get(f"http://{addr[0]}:{addr[1]}/nothing") as resp:
                assert resp.status == 404
            reader, writer = await connect(addr)
            try:
                writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
                out = b""
                with contextlib.suppress(ConnectionError):
                    while chunk := await asyncio.wait_for(reader.read(65536), 5):
                        out += chunk
                return out
            finally:
                await close_all([(reader, writer)])
    finally:
        await engine.stop()
