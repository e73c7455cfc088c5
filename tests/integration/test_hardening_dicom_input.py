"""Bad DICOM input, over real C-STORE (pynetdicom, dcmtk storescu) and real STOW-RS HTTP.

Each refusal names what is actually wrong, and nothing refused is indexed:

* native pixel data shorter than Rows x Columns x samples x bits x frames,
  even when its element length is self-consistent;
* a data set cut inside a value that is not pixel data (an RT Plan);
* an intact image without Pixel Data ("no Pixel Data", not "truncated?"),
  while a non-image object without pixels is simply stored;
* data encoded implicit VR under an explicit transfer syntax, and the reverse;
* every storage SOP class, retired ones included, is accepted over C-STORE;
* a STOW-RS boundary that is not ASCII, or a body that stops early, is a 400
  with a message, never a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from channels.dicom.sop_classes import storage_sop_classes
from tests.conftest import wait_for
from tests.fixtures.dicom import from_testdata, ingest_config, part10, synth_instance, write
from tests.integration.test_dicom_ingest import tool

REFERENCED, FAILED, REASON = "00081199", "00081198", "00081197"
BOUNDARY = "input-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
US_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MULTIFRAME_RETIRED = "1.2.840.10008.5.1.4.1.1.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"


def config(db_url: str, data_dir: Path) -> str:
    return ingest_config(db_url, data_dir)


@pytest.fixture
async def engine(engine_factory: Any, db_url: str, tmp_path: Path) -> Any:
    return await engine_factory(config(db_url, tmp_path / "data"))


def c_store(address: tuple[str, int], path: Path) -> Dataset:
    """pynetdicom as the modality, sending the file's bytes exactly as they are."""
    meta = read_file_meta_info(path)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate(*address, ae_title="RADBRIDGE")
    assert assoc.is_established
    previous, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()


async def stow(engine: Any, *parts: bytes) -> tuple[int, Any, str]:
    host, port = engine.address("web")
    body = (
        b"".join(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
            for p in parts
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    status, headers, text = await http_raw(host, port, RELATED.encode(), body)
    return status, json.loads(text), headers.get("warning", "")


async def http_raw(
    host: str, port: int, content_type: bytes, body: bytes
) -> tuple[int, dict[str, str], str]:
    """One POST /studies written byte for byte (headers a client library would refuse)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /studies HTTP/1.1\r\nHost: x\r\nContent-Type: "
        + content_type
        + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    text = await reader.readexactly(int(headers.get("content-length", 0)))
    writer.close()
    await writer.wait_closed()
    return int(lines[0].split()[1]), headers, text.decode("utf-8", "replace")


def encoded_as(ds: Dataset, implicit_body: bool, declared_syntax: str) -> bytes:
    """Part 10 bytes whose file meta declares *declared_syntax*, whatever the body uses."""
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    ds.file_meta.TransferSyntaxUID = declared_syntax
    write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, implicit_body
    write_dataset(body, ds)
    return out.getvalue() + body.getvalue()


def image() -> Dataset:
    return synth_instance(generate_uid(), generate_uid(), 1)


def rt_plan() -> Dataset:
    return from_testdata("rtplan.dcm", generate_uid(), generate_uid(), 1)


def cut_inside_a_value(data: bytes) -> bytes:
    """*data* cut in the middle of the data set (an RT Plan has no pixel data to cut)."""
    return data[: len(data) // 2]


async def nothing_indexed(engine: Any, tmp_path: Path) -> bool:
    return not list((tmp_path / "data").rglob("*.dcm"))


# -- pixel data shorter than the image it describes ------------------------------------------


async def test_short_pixel_data_over_c_store_is_refused_with_both_sizes(
    engine: Any, tmp_path: Path
) -> None:
    ds = image()
    ds.PixelData = ds.PixelData[:1000]  # a self-consistent element of 1000 bytes
    path = write(ds, tmp_path / "short.dcm")
    status = await asyncio.to_thread(c_store, engine.address("pacs"), path)
    assert (status.Status, status.ErrorComment) == (
        0xC000,
        "Pixel Data too short: 1000 of 8192 bytes",
    )
    assert await nothing_indexed(engine, tmp_path)


async def test_a_multi_frame_image_with_one_frame_of_pixels_is_refused_over_stow(
    engine: Any, tmp_path: Path
) -> None:
    ds = image()
    ds.NumberOfFrames = 3
    status, body, warning = await stow(engine, part10(ds))
    assert status == 409
    assert [i[REASON]["Value"] for i in body[FAILED]["Value"]] == [[0xC000]]
    assert body[FAILED]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert "Pixel Data too short: 8192 of 24576 bytes" in warning


# -- a data set cut inside a value ----------------------------------------------------------


async def test_an_rt_plan_cut_inside_a_value_is_refused_over_c_store_and_not_indexed(
    engine: Any, tmp_path: Path
) -> None:
    path = tmp_path / "cut-plan.dcm"
    path.write_bytes(cut_inside_a_value(part10(rt_plan())))
    status = await asyncio.to_thread(c_store, engine.address("pacs"), path)
    assert status.Status == 0xC000
    assert status.ErrorComment.startswith("truncated: (")
    assert await nothing_indexed(engine, tmp_path)


async def test_pydicoms_truncated_rt_plan_is_refused_over_stow_naming_the_cut_element(
    engine: Any, tmp_path: Path
) -> None:
    path = get_testdata_file("rtplan_truncated.dcm")
    assert isinstance(path, str)
    status, body, warning = await stow(engine, await asyncio.to_thread(Path(path).read_bytes))
    assert status == 409 and REFERENCED not in body
    assert "truncated: (300A,00B0) needs 976 bytes, 711 left" in warning
    assert await nothing_indexed(engine, tmp_path)


async def test_an_intact_rt_plan_without_pixel_data_is_stored(engine: Any, tmp_path: Path) -> None:
    plan = rt_plan()
    path = write(plan, tmp_path / "plan.dcm")
    status = await asyncio.to_thread(c_store, engine.address("pacs"), path)
    assert status.Status == 0x0000
    code, body, _ = await stow(engine, part10(rt_plan()))
    assert code == 200 and FAILED not in body
    row = await engine.store.get_study(plan.StudyInstanceUID)
    assert row is not None and row.instance_count == 1


# -- reasons that name what is wrong ---------------------------------------------------------


async def test_an_intact_image_without_pixel_data_is_refused_as_such_not_as_truncated(
    engine: Any, tmp_path: Path
) -> None:
    ds = image()
    del ds.PixelData
    path = write(ds, tmp_path / "no-pixels.dcm")
    status = await asyncio.to_thread(c_store, engine.address("pacs"), path)
    assert (status.Status, status.ErrorComment) == (
        0xC000,
        "image has no Pixel Data (required by its SOP class)",
    )
    assert await nothing_indexed(engine, tmp_path)


@pytest.mark.parametrize(
    ("implicit_body", "declared", "reason"),
    [
        (True, ExplicitVRLittleEndian, "encoded implicit VR but transfer syntax says explicit VR"),
        (False, ImplicitVRLittleEndian, "encoded explicit VR but transfer syntax says implicit VR"),
    ],
)
async def test_data_encoded_otherwise_than_declared_is_refused_naming_the_mismatch(
    engine: Any, tmp_path: Path, implicit_body: bool, declared: str, reason: str
) -> None:
    data = encoded_as(image(), implicit_body, declared)
    path = tmp_path / "mismatch.dcm"
    path.write_bytes(data)
    status = await asyncio.to_thread(c_store, engine.address("pacs"), path)
    assert (status.Status, status.ErrorComment) == (0xC000, reason)
    code, body, warning = await stow(engine, data)
    assert code == 409 and reason in warning
    assert await nothing_indexed(engine, tmp_path)


# -- every storage SOP class, retired included ----------------------------------------------


@pytest.mark.parametrize("sop_class", [US_RETIRED, US_MULTIFRAME_RETIRED])
async def test_a_retired_ultrasound_image_is_stored_over_c_store_by_storescu(
    engine: Any, tmp_path: Path, sop_class: str
) -> None:
    ds = image()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = "US"
    path = write(ds, tmp_path / "us.dcm")
    host, port = engine.address("pacs")
    rc, out = await tool(
        "storescu",
        "-v",
        "--required",
        "-aet",
        "MODALITY",
        "-aec",
        "RADBRIDGE",
        host,
        str(port),
        path,
    )
    assert rc == 0 and "Received Store Response (Success)" in out, out
    row = await engine.store.get_study(ds.StudyInstanceUID)
    assert row is not None and (row.instance_count, row.modality) == (1, "US")


def negotiate_all(address: tuple[str, int]) -> tuple[int, list[str]]:
    """Request every storage class, 128 per association (pynetdicom's requestor limit)."""
    classes, accepted, rejected = storage_sop_classes(), 0, []
    for start in range(0, len(classes), 128):
        ae = AE(ae_title="PYSCU")
        for uid in classes[start : start + 128]:
            ae.add_requested_context(uid, ExplicitVRLittleEndian)
        assoc = ae.associate(*address, ae_title="RADBRIDGE")
        assert assoc.is_established
        accepted += len(assoc.accepted_contexts)
        rejected += [str(cx.abstract_syntax) for cx in assoc.rejected_contexts]
        assoc.release()
    return accepted, rejected


async def test_every_storage_sop_class_is_accepted_in_negotiation(engine: Any) -> None:
    accepted, rejected = await asyncio.to_thread(negotiate_all, engine.address("pacs"))
    assert rejected == []
    assert accepted == len(storage_sop_classes()) > 200


# -- STOW-RS requests the parser cannot read -------------------------------------------------


@pytest.mark.parametrize("boundary", ["bé€".encode(), b"\xff\xfe", b"a\tb"])
async def test_a_boundary_that_is_not_ascii_is_a_400_with_a_message(
    engine: Any, boundary: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = engine.address("web")
    body = b"--" + boundary + b"\r\n\r\nxx\r\n--" + boundary + b"--\r\n"
    status, _, text = await http_raw(
        host, port, b'multipart/related; type="application/dicom"; boundary=' + boundary, body
    )
    assert (status, text) == (
        400,
        "malformed multipart/related body: boundary must be printable ASCII",
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_that_stops_short_is_answered_not_a_traceback(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = engine.address("web")
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST /studies HTTP/1.1\r\nHost: x\r\nContent-Type: {RELATED}\r\n"
        f"Content-Length: 100000\r\n\r\n--{BOUNDARY}\r\n\r\nDICM".encode()
    )
    writer.write_eof()  # the client leaves long before the 100000 bytes it promised
    await reader.read()
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: any("WEB-303" in r.getMessage() for r in caplog.records))
    refused = [r.getMessage() for r in caplog.records if "WEB-303" in r.getMessage()]
    assert "request body incomplete or malformed (ConnectionResetError)" in refused[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
