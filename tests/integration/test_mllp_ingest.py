"""The engine over real MLLP on loopback: store-then-ACK, NAK reasons, limits, TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import hl7
import hl7.mllp
import pytest

from bench.hl7gen import adt_a01, orm_o01
from channels.mllp.client import MLLPClient
from channels.mllp.framing import frame
from engine.errors import PeerUnavailable
from engine.store.base import MessageQuery
from mappings.hl7v2.ack import read_ack
from tests.conftest import wait_for
from tests.fixtures.certs import make_pki


def config(db_url: str, source_extra: str = "", channel_extra: str = "") -> str:
    return f"""
[store]
url = "{db_url}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0"{source_extra} }}
accept = ["ADT^A01", "ORM^O01"]
{channel_extra}
"""


async def send(engine: Any, payload: bytes, channel: str = "ris") -> tuple[str, str, str]:
    host, port = engine.address(channel)
    client = MLLPClient(host, port, ack_timeout=10)
    try:
        return read_ack(await client.send(payload))
    finally:
        await client.close()


async def test_aa_comes_only_after_the_message_is_in_the_store(engine_factory: Any,
                                                               db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    code, control_id, _ = await send(engine, orm_o01("ORD1"))
    assert (code, control_id) == ("CA", "ORD1")  # MSH-15=AL: enhanced mode commit accept
    (stored,) = await engine.store.query_messages(MessageQuery(control_id="ORD1"))
    assert stored.message_type == "ORM^O01" and stored.key == "MRN0001"


async def test_original_mode_gets_aa(engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    assert (await send(engine, adt_a01("ADT1")))[:2] == ("AA", "ADT1")


async def test_a_type_outside_accept_gets_ar_with_err_and_is_stored_as_error(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    msg = adt_a01("X1").replace(b"ADT^A01^ADT_A01", b"ADT^A08^ADT_A01")
    code, control_id, reason = await send(engine, msg)
    assert (code, control_id) == ("AR", "X1")
    assert "ADT^A08 is not accepted" in reason and "200^Unsupported message type" in reason
    (stored,) = await engine.store.query_messages(MessageQuery(control_id="X1"))
    assert stored.status == "ERROR" and stored.raw == msg


async def test_an_unparseable_message_is_stored_with_its_raw_bytes_and_answered_ar(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    code, _, reason = await send(engine, b"HELLO this is not HL7")
    assert code == "AR" and "does not start with an MSH segment" in reason
    (stored,) = await engine.store.query_messages(MessageQuery(status="ERROR"))
    assert stored.raw == b"HELLO this is not HL7"


async def test_a_missing_control_id_is_named_in_the_nak(engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    code, _, reason = await send(engine, b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\rPID|1||M")
    assert code == "AR" and "MSH-10" in reason and "101^Required field missing" in reason


async def test_a_garbled_segment_gets_ae(engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    code, cid, reason = await send(engine, b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|G1|P|2.3\r\x00\x01junk")
    assert (code, cid) == ("AE", "G1") and "is not a valid HL7 segment" in reason


async def test_duplicates_are_flagged_within_the_window(engine_factory: Any,
                                                        db_url: str) -> None:
    engine = await engine_factory(config(db_url, channel_extra='duplicates = { window_secs = 60 }'))
    assert (await send(engine, adt_a01("D1")))[0] == "AA"
    assert (await send(engine, adt_a01("D1")))[0] == "AA"
    rows = await engine.store.query_messages(MessageQuery(control_id="D1"))
    assert sorted(m.duplicate for m in rows) == [False, True]


async def test_duplicates_are_rejected_when_configured(engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(
        db_url, channel_extra='duplicates = { window_secs = 60, action = "reject" }'))
    assert (await send(engine, adt_a01("D2")))[0] == "AA"
    code, _, reason = await send(engine, adt_a01("D2"))
    assert code == "AR" and "duplicate message control id D2" in reason


async def test_many_concurrent_connections_each_get_their_own_acks_in_order(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    host, port = engine.address("ris")

    async def one_connection(c: int) -> list[str]:
        client = MLLPClient(host, port)
        got = []
        for i in range(20):
            got.append(read_ack(await client.send(adt_a01(f"C{c}-{i}")))[1])
        await client.close()
        return got

    results = await asyncio.gather(*(one_connection(c) for c in range(30)))
    for c, got in enumerate(results):
        assert got == [f"C{c}-{i}" for i in range(20)]
    counts = await engine.store.counts()
    assert sum(n for (ch, _), n in counts.items() if ch == "ris") == 600


async def test_pipelined_frames_in_one_write_get_acks_in_arrival_order(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    reader, writer = await asyncio.open_connection(*engine.address("ris"))
    writer.write(b"".join(frame(adt_a01(f"P{i}")) for i in range(50)) + frame(b"nonsense"))
    data = b""
    while data.count(b"\x1c\r") < 51:
        data += await asyncio.wait_for(reader.read(65536), 10)
    acks = [read_ack(f.lstrip(b"\x0b")) for f in data.split(b"\x1c\r") if f]
    assert [a[1] for a in acks[:50]] == [f"P{i}" for i in range(50)]
    assert acks[50][0] == "AR"
    writer.close()


async def test_an_oversized_message_is_refused_and_the_connection_recovers(
        engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url, ", max_message_bytes = 4096"))
    host, port = engine.address("ris")
    client = MLLPClient(host, port)
    big = adt_a01("BIG1") + b"\rOBX|1|ED|||" + b"A" * 200_000
    code, cid, reason = read_ack(await client.send(big))
    assert (code, cid) == ("AR", "BIG1") and "exceeds the 4096-byte limit" in reason
    assert read_ack(await client.send(adt_a01("AFTER")))[:2] == ("AA", "AFTER")
    await client.close()


async def test_garbage_between_frames_is_dropped_and_counted(engine_factory: Any,
                                                             db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    reader, writer = await asyncio.open_connection(*engine.address("ris"))
    writer.write(b"\x00\x01GARBAGE" + frame(adt_a01("G2")))
    data = await asyncio.wait_for(reader.read(65536), 10)
    assert read_ack(data.strip(b"\x0b\x1c\r"))[:2] == ("AA", "G2")
    writer.close()
    await wait_for(lambda: engine.sources["ris"].garbage_bytes == 9)


async def test_idle_connections_are_closed(engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url, ", idle_timeout_secs = 0.3"))
    reader, writer = await asyncio.open_connection(*engine.address("ris"))
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # server closed it
    writer.close()


async def test_python_hl7_mllp_client_interoperates(engine_factory: Any, db_url: str) -> None:
    engine = await engine_factory(config(db_url))
    reader, writer = await hl7.mllp.open_hl7_connection(*engine.address("ris"))
    writer.writemessage(hl7.parse(adt_a01("PH1").decode()))
    await writer.drain()
    ack = await asyncio.wait_for(reader.readmessage(), 10)
    assert str(ack.segment("MSA")(1)) == "AA" and str(ack.segment("MSA")(2)) == "PH1"
    writer.close()


async def test_tls_with_client_certificates(engine_factory: Any, db_url: str,
                                            tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = (f', tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}", '
           f'client_ca = "{pki.ca_cert}" }}')
    engine = await engine_factory(config(db_url, tls))
    host, port = engine.address("ris")
    good = ssl.create_default_context(cafile=str(pki.ca_cert))
    good.load_cert_chain(pki.client_cert, pki.client_key)
    client = MLLPClient("localhost", port, ssl_context=good)
    assert read_ack(await client.send(adt_a01("TLS1")))[:2] == ("AA", "TLS1")
    await client.close()

    rogue = ssl.create_default_context(cafile=str(pki.ca_cert))
    rogue.load_cert_chain(pki.rogue_cert, pki.rogue_key)  # signed by another CA
    with pytest.raises(PeerUnavailable):
        bad = MLLPClient("localhost", port, ssl_context=rogue, ack_timeout=5)
        await bad.send(adt_a01("TLS2"))
    no_cert = MLLPClient("localhost", port, ack_timeout=5,
                         ssl_context=ssl.create_default_context(cafile=str(pki.ca_cert)))
    with pytest.raises(PeerUnavailable):
        await no_cert.send(adt_a01("TLS3"))
    assert not await engine.store.query_messages(MessageQuery(control_id="TLS2"))
