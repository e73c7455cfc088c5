"""Exhaustion over DIMSE: a PDU declaring more than we accept is aborted after its header;
one sender cannot take every association; an address off the allow-list is not read.

pynetdicom alone buffers whatever length a PDU header declares (96 MiB sent
held +122 MiB). The SCP's ``PduGuard`` counts every byte read from each
connection, so these tests assert on bytes consumed, not on memory: a
96 MiB A-ASSOCIATE-RQ or P-DATA-TF is refused after its 6-byte header with
an A-ABORT, and the listener goes on serving. The same guard reads a PACS's
answers to our C-STORE SCU: a hostile PACS (a socket server here) answering
with a 96 MiB PDU fails the send as "peer unavailable" (retried), unread.

Per-peer limits and the allow-list (``engine.peers``, like MLLP's and the
HTTP listeners'): a second loopback address, 127.0.0.2, is the other peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from channels.dicom.pdu_guard import CONTROL_LIMIT, Refusal, abort_pdu, pdu_limit
from channels.dicom.scu import StoreSCUConfig, StoreSCUDestination
from engine.errors import PeerUnavailable
from tests.conftest import wait_for
from tests.fixtures.certs import make_pki
from tests.fixtures.dicom import CT_IMAGE, part10, synth_instance, write
from tests.integration.test_dicom_ingest import start, tool

OTHER = "127.0.0.2"  # a second loopback address: another peer

DECLARED = 96 * 1024 * 1024
A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04


def config(db_url: str, data_dir: Path, max_pdu: int, extra: str = "") -> str:
    source = (
        f'type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0", '
        f"max_pdu = {max_pdu}, acse_timeout_secs = 600{extra}"
    )
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{data_dir}"
[[channel]]
name = "pacs"
source = {{ {source} }}
study_quiet_secs = 60
"""


@pytest.fixture
async def engine(engine_factory: Any, db_url: str, tmp_path: Path) -> Any:
    return await engine_factory(config(db_url, tmp_path / "data", 16384))


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the SCP sends until it closes (a reset counts as closed)."""
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def flood(sock: socket.socket, total: int) -> int:
    """Send up to *total* bytes of PDU body; how many the kernel took before the close."""
    sent, block = 0, b"\0" * 65536
    try:
        while sent < total:
            sent += sock.send(block)
    except OSError:
        pass
    return sent


async def test_a_96_mib_associate_request_is_aborted_after_its_header(engine: Any) -> None:
    with socket.create_connection(engine.address("pacs"), timeout=30) as sock:
        sock.sendall(header(A_ASSOCIATE_RQ, DECLARED))
        answer = await asyncio.to_thread(read_to_eof, sock)
    assert answer == abort_pdu()  # A-ABORT, source: service provider, invalid parameter
    refusals = engine.sources["pacs"].pdu_guard.refusals
    assert refusals == [Refusal(A_ASSOCIATE_RQ, DECLARED, CONTROL_LIMIT, 6)]
    server = engine.sources["pacs"].server  # the association slot is free at once, not
    await wait_for(lambda: not server.active_associations, timeout=60)  # after acse_timeout


async def test_a_client_streaming_a_huge_pdu_is_cut_off_having_sent_only_the_header_we_read(
    engine: Any,
) -> None:
    with socket.create_connection(engine.address("pacs"), timeout=30) as sock:
        sock.sendall(header(A_ASSOCIATE_RQ, DECLARED))
        sent = await asyncio.to_thread(flood, sock, DECLARED)
        await asyncio.to_thread(read_to_eof, sock)
    assert sent < DECLARED  # the connection closed under the sender
    guard = engine.sources["pacs"].pdu_guard
    await wait_for(lambda: len(guard.refusals) == 1)
    assert guard.refusals[0].bytes_read == 6  # of everything sent, the header alone was read


def associate_then_send(address: tuple[str, int], raw: bytes) -> bool:
    """Associate with pynetdicom, then write *raw* on its socket behind its back; True when
    the SCP aborted the association."""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate(*address, ae_title="RADBRIDGE")
    assert assoc.is_established
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    raw_socket = assoc.dul.socket.socket
    raw_socket.sendall(raw)
    assoc.join(timeout=60)
    raw_socket.close()  # pynetdicom leaves a requestor's socket open after an A-ABORT
    return bool(assoc.is_aborted)


async def test_a_p_data_pdu_over_our_max_pdu_aborts_the_association_unread(
    engine: Any,
) -> None:
    raw = header(P_DATA_TF, DECLARED) + b"\0" * 65536
    aborted = await asyncio.to_thread(associate_then_send, engine.address("pacs"), raw)
    assert aborted
    guard = engine.sources["pacs"].pdu_guard
    await wait_for(lambda: len(guard.refusals) == 1)
    (refusal,) = guard.refusals
    assert (refusal.pdu_type, refusal.declared, refusal.limit) == (P_DATA_TF, DECLARED, 16384)
    assert refusal.bytes_read < 16384  # the association request and the 6-byte header


async def test_the_listener_serves_on_after_a_refusal_and_pdus_at_the_limit_pass(
    engine: Any, tmp_path: Path
) -> None:
    with socket.create_connection(engine.address("pacs"), timeout=30) as sock:
        sock.sendall(header(P_DATA_TF, DECLARED))
        await asyncio.to_thread(read_to_eof, sock)
    path = write(
        synth_instance(generate_uid(), generate_uid(), 1, rows=256, cols=256), tmp_path / "big.dcm"
    )  # 128 KiB of pixels: eight PDUs of our 16 KiB maximum
    host, port = engine.address("pacs")
    rc, out = await tool(
        "storescu", "-v", "-aet", "MODALITY", "-aec", "RADBRIDGE", host, str(port), path
    )
    assert rc == 0 and "Received Store Response (Success)" in out, out
    assert len(engine.sources["pacs"].pdu_guard.refusals) == 1


@pytest.mark.parametrize(
    ("pdu_type", "max_pdu", "limit"),
    [
        (P_DATA_TF, 16384, 16384),
        (P_DATA_TF, 0, 64 * 1024 * 1024),  # nothing advertised: still bounded
        (A_ASSOCIATE_RQ, 16384, CONTROL_LIMIT),  # a big association request still fits
        (A_ASSOCIATE_RQ, 4 * 1024 * 1024, 4 * 1024 * 1024),
        (None, 16384, CONTROL_LIMIT),
    ],
)
def test_the_limit_is_our_max_pdu_for_data_and_at_least_a_mebibyte_for_the_rest(
    pdu_type: int | None, max_pdu: int, limit: int
) -> None:
    assert pdu_limit(pdu_type, max_pdu) == limit


# --- the listener: per-peer limit and allow-list -------------------------------------------


def associate(address: tuple[str, int], source: str = "127.0.0.1") -> Any:
    """A pynetdicom association from *source* (established or rejected; the caller ends it)."""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    return ae.associate(*address, ae_title="RADBRIDGE", bind_address=(source, 0))


def end(assoc: Any) -> None:
    """Release an established association; close the socket pynetdicom leaves open after a
    rejection or a closed connection."""
    if assoc.is_established:
        assoc.release()
    sock = assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.close()


def rejection(assoc: Any) -> tuple[int, int, int] | None:
    """(result, source, reason) of an A-ASSOCIATE-RJ, or None if not rejected."""
    if not assoc.is_rejected:
        return None
    rj = assoc.acceptor.primitive
    return rj.result, rj.result_source, rj.diagnostic


async def test_one_address_holding_its_associations_cannot_block_a_second_address(
    engine_factory: Any, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    engine = await engine_factory(config(
        db_url, tmp_path / "data", 16384, ", max_associations = 4, max_connections_per_peer = 2"))
    addr = engine.address("pacs")
    held = [await asyncio.to_thread(associate, addr) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = await asyncio.to_thread(associate, addr)
        # rejected-transient, service-provider (presentation), local limit exceeded
        await asyncio.to_thread(end, third)
        assert rejection(third) == (0x02, 0x03, 0x02)
        other = await asyncio.to_thread(associate, addr, OTHER)
        await asyncio.to_thread(end, other)
        assert other.is_released
    finally:
        for assoc in held:
            await asyncio.to_thread(end, assoc)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DCM-208")]
    assert len(lines) == 1 and "peer=127.0.0.1:" in lines[0] and "limit=2" in lines[0]
    gate = engine.sources["pacs"].peers.gate
    await wait_for(lambda: gate.total == 0)  # every slot given back as its thread ended
    again = await asyncio.to_thread(associate, addr)  # a freed slot is usable again
    await asyncio.to_thread(end, again)
    assert again.is_released


async def test_associations_over_max_associations_are_rejected_transient_from_any_address(
    engine_factory: Any, db_url: str, tmp_path: Path
) -> None:
    engine = await engine_factory(config(db_url, tmp_path / "data", 16384,
                                         ", max_associations = 1"))
    addr = engine.address("pacs")
    first = await asyncio.to_thread(associate, addr)
    try:
        assert first.is_established
        over = await asyncio.to_thread(associate, addr, OTHER)
        await asyncio.to_thread(end, over)
        assert rejection(over) == (0x02, 0x03, 0x02)
    finally:
        await asyncio.to_thread(end, first)


async def test_the_dicom_allow_list_closes_other_addresses_before_reading_a_byte(
    engine_factory: Any, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    engine = await engine_factory(config(db_url, tmp_path / "data", 16384,
                                         f', allow = ["{OTHER}/32", "10.0.0.0/8"]'))
    addr = engine.address("pacs")
    refused = await asyncio.to_thread(associate, addr)  # 127.0.0.1: not on the list
    await asyncio.to_thread(end, refused)
    assert not refused.is_established and not refused.is_rejected  # closed, never answered
    with socket.create_connection(addr, timeout=30) as sock:  # a 96 MiB header, unread
        sock.sendall(header(A_ASSOCIATE_RQ, DECLARED))
        assert await asyncio.to_thread(read_to_eof, sock) == b""
    allowed = await asyncio.to_thread(associate, addr, OTHER)
    await asyncio.to_thread(end, allowed)
    assert allowed.is_released
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DCM-207")]
    assert len(lines) == 2 and all("peer=127.0.0.1:" in line for line in lines)
    source = engine.sources["pacs"]
    assert source.pdu_guard.refusals == []  # the PDU guard never saw them: nothing read
    assert source.peers.gate.refused["not allowed"] == 2


# --- our C-STORE SCU: a hostile PACS's PDUs are bounded too --------------------------------

A_ASSOCIATE_AC = 0x02


def scu_to(port: int, **config: Any) -> StoreSCUDestination:
    return StoreSCUDestination("pacs-out", StoreSCUConfig.model_validate(
        {"type": "dicom", "endpoint": f"127.0.0.1:{port}", "called_ae": "PACS", **config}))


def ct_part10() -> bytes:
    return part10(synth_instance(generate_uid(), generate_uid(), 1))


class HostileAcceptor:
    """A raw socket 'PACS' that reads the A-ASSOCIATE-RQ and answers with an A-ASSOCIATE-AC
    declaring 96 MiB, then streams its body for as long as the connection takes it."""

    def __init__(self) -> None:
        self.sent = 0  # bytes of the body handed to the connection before it closed
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(6)
        await reader.readexactly(struct.unpack(">L", head[2:])[0])  # the A-ASSOCIATE-RQ
        writer.write(header(A_ASSOCIATE_AC, DECLARED))
        block = b"\0" * 65536
        try:
            while self.sent < DECLARED:
                writer.write(block)
                await writer.drain()
                self.sent += len(block)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_pacs_answering_a_96_mib_associate_pdu_fails_the_send_as_unavailable_unread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="radbridge")
    pacs = HostileAcceptor()
    scu = scu_to(await pacs.start(), max_pdu=16384)
    try:
        with pytest.raises(PeerUnavailable, match="no association with PACS@"):
            await scu.send(ct_part10())  # retried by the delivery worker, like a PACS down
    finally:
        await scu.close()
        await pacs.stop()
    assert scu.pdu_guard.refusals == [Refusal(A_ASSOCIATE_AC, DECLARED, CONTROL_LIMIT, 6)]
    assert pacs.sent < DECLARED  # the connection closed under the sender, its body unread
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DCM-205")]
    assert "destination=pacs-out" in line and "channel=" not in line


class HostileStoreSCP:
    """A pynetdicom SCP whose first C-STORE is answered with a P-DATA-TF header declaring
    96 MiB (written on the association's socket behind pynetdicom's back); later ones are
    answered 0x0000."""

    def __init__(self) -> None:
        self.stores = 0
        self.hostile: socket.socket | None = None
        ae = AE(ae_title="PACS")
        ae.add_supported_context(CT_IMAGE, ExplicitVRLittleEndian)
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self.server.server_address[1])

    def _on_store(self, ev: Any) -> int:
        self.stores += 1
        if self.stores == 1:
            self.hostile = ev.assoc.dul.socket.socket
            with contextlib.suppress(OSError):
                self.hostile.sendall(header(P_DATA_TF, DECLARED) + b"\0" * 65536)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()
        if self.hostile is not None:  # pynetdicom leaves it open after the SCU's A-ABORT
            self.hostile.close()


async def test_a_pacs_answering_a_c_store_with_a_96_mib_pdu_is_aborted_then_the_retry_works(
) -> None:
    pacs = HostileStoreSCP()
    scu = scu_to(pacs.port, max_pdu=16384)
    try:
        with pytest.raises(PeerUnavailable, match="aborted before the C-STORE response"):
            await scu.send(ct_part10())
        (refusal,) = scu.pdu_guard.refusals
        assert (refusal.pdu_type, refusal.declared, refusal.limit) == (P_DATA_TF, DECLARED, 16384)
        assert refusal.bytes_read < 16384  # the association answer and the 6-byte header
        answer = await scu.send(ct_part10())  # the delivery worker's retry: a new association
        assert answer.startswith(b"0x0000 Success")
    finally:
        await scu.close()
        await asyncio.to_thread(pacs.stop)
    assert pacs.stores == 2


# --- TLS: a client that never shakes hands ----------------------------------------------------


async def test_a_silent_tls_client_neither_blocks_other_associations_nor_outlives_acse_timeout(
    engine_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # pynetdicom shakes hands in its accepting thread, without a timeout: one silent TCP
    # connection stopped every later association, and the engine's stop, for ever.
    caplog.set_level(logging.INFO, logger="radbridge")
    pki = make_pki(tmp_path)
    engine = await start(
        engine_factory, f"sqlite:///{tmp_path / 'rb.db'}", tmp_path,
        f', tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}", '
        f'client_ca = "{pki.ca_cert}" }}, acse_timeout_secs = 2',
    )
    host, port = engine.address("pacs")
    with socket.create_connection((host, port), timeout=60) as silent:
        rc, out = await tool(
            "echoscu", "+tls", pki.client_key, pki.client_cert, "+cf", pki.ca_cert,
            "-aet", "MODALITY", "-aec", "RADBRIDGE", "-to", "30", "-ta", "30",
            "localhost", str(port),
        )
        assert rc == 0, out  # served while the silent one still waits
        assert await asyncio.to_thread(read_to_eof, silent) == b""  # closed by us, in time
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DCM-210")]
    assert len(lines) == 1 and "reason=TimeoutError" in lines[0]
    gate = engine.sources["pacs"].peers.gate
    await wait_for(lambda: gate.total == 0)  # the silent one's slot is free again
