"""Exhaustion over DIMSE: a PDU declaring more than we accept is aborted after its header.

pynetdicom alone buffers whatever length a PDU header declares (96 MiB sent
held +122 MiB). The SCP's ``PduGuard`` counts every byte read from each
connection, so these tests assert on bytes consumed, not on memory: a
96 MiB A-ASSOCIATE-RQ or P-DATA-TF is refused after its 6-byte header with
an A-ABORT, and the listener goes on serving.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from channels.dicom.pdu_guard import CONTROL_LIMIT, Refusal, abort_pdu, pdu_limit
from tests.conftest import wait_for
from tests.fixtures.dicom import CT_IMAGE, synth_instance, write
from tests.integration.test_dicom_ingest import tool

DECLARED = 96 * 1024 * 1024
A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04


def config(db_url: str, data_dir: Path, max_pdu: int) -> str:
    source = (
        f'type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0", '
        f"max_pdu = {max_pdu}, acse_timeout_secs = 600"
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
