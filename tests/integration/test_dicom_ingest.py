"""The C-STORE SCP against real peers: dcmtk storescu/dcmsend/echoscu, pynetdicom, Orthanc.

Every peer runs outside the event loop (a subprocess or a thread): the SCP
indexes on the loop, so a peer blocking it would deadlock the test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from engine.errors import StoreUnavailable
from tests.fixtures.certs import make_pki
from tests.fixtures.dicom import (
    CT_IMAGE,
    StudyFiles,
    compress,
    from_testdata,
    require,
    synth_instance,
    transfer_syntax,
    truncated,
    write,
    write_study,
)
from tests.fixtures.orthanc import Orthanc


def config(db_url: str, data_dir: Path, source_extra: str = "") -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{data_dir}"
[[channel]]
name = "pacs"
source = {{ type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0"{source_extra} }}
study_quiet_secs = 60
"""


async def start(engine_factory: Any, db_url: str, tmp_path: Path, extra: str = "") -> Any:
    return await engine_factory(config(db_url, tmp_path / "data", extra))


async def tool(*args: str | Path) -> tuple[int, str]:
    """Run a dcmtk binary without blocking the loop; (exit code, combined output)."""
    proc = await asyncio.create_subprocess_exec(
        require(str(args[0])), *map(str, args[1:]), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def stored_files(tmp_path: Path, study: str) -> list[Path]:
    return sorted((tmp_path / "data" / "instances" / study).rglob("*.dcm"))


async def assert_study_indexed(engine: Any, tmp_path: Path, study: StudyFiles,
                               series: int) -> None:
    row = await engine.store.get_study(study.uid)
    assert row is not None
    assert (row.instance_count, row.series_count) == (study.instance_count, series)
    assert (row.accession, row.patient_id, row.state) == (study.accession, study.patient_id,
                                                          "receiving")
    assert len(stored_files(tmp_path, study.uid)) == study.instance_count


def scu_store(address: tuple[str, int], path: Path, called: str = "RADBRIDGE",
              chunked: bool = False) -> Dataset:
    """pynetdicom as the modality (in a thread); ``chunked`` sends the file's bytes as is."""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate(*address, ae_title=called)
    assert assoc.is_established
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = chunked
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()


async def test_storescu_study_with_two_series_is_durable_and_indexed_before_success(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    study = write_study(tmp_path / "send", [("CT", 3), ("CT", 2)])
    host, port = engine.address("pacs")
    rc, out = await tool("storescu", "-v", "-aet", "MODALITY", "-aec", "RADBRIDGE", host,
                         str(port), *study.paths)
    assert rc == 0, out
    assert out.count("Received Store Response (Success)") == 5, out
    await assert_study_indexed(engine, tmp_path, study, series=2)
    sent = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in study.paths}
    for path in stored_files(tmp_path, study.uid):
        assert path.read_bytes()[-4096:] == sent[path.stem][-4096:]  # no re-encoding


async def test_dcmsend_compressed_study_keeps_each_transfer_syntax(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    plain = write_study(tmp_path / "plain", [("DX", 2), ("CT", 2), ("CT", 2)], rows=128,
                        cols=128)
    paths = (compress(plain.paths[0:2], "jpeg-lossless", tmp_path / "c")
             + compress(plain.paths[2:4], "rle", tmp_path / "c")
             + compress(plain.paths[4:6], "jpeg-ls", tmp_path / "c"))
    j2k = from_testdata("JPEG2000.dcm", plain.uid, plain.series_uids[2], 9)
    paths.append(write(j2k, tmp_path / "c" / "j2k.dcm"))
    host, port = engine.address("pacs")
    rc, out = await tool("dcmsend", "-v", "-aet", "MODALITY", "-aec", "RADBRIDGE",
                         "--decompress-never", host, str(port), *paths)
    assert rc == 0, out
    plain.paths = paths
    row = await engine.store.get_study(plain.uid)
    assert row is not None and (row.instance_count, row.series_count) == (7, 3)
    got = {transfer_syntax(p) for p in stored_files(tmp_path, plain.uid)}
    assert got == {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5",
                   "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.91"}


async def test_echoscu_gets_a_c_echo_answer(engine_factory: Any, db_url: str,
                                            tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    host, port = engine.address("pacs")
    rc, out = await tool("echoscu", "-v", "-aet", "MODALITY", "-aec", "RADBRIDGE", host,
                         str(port))
    assert rc == 0 and "Received Echo Response (Success)" in out, out


async def test_a_wrong_called_ae_title_is_rejected(engine_factory: Any, db_url: str,
                                                   tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    host, port = engine.address("pacs")
    rc, out = await tool("echoscu", "-aet", "MODALITY", "-aec", "NOTUS", host, str(port))
    assert rc != 0 and "Called AE Title Not Recognized" in out, out
    assert engine.sources["pacs"].rejected == 1


async def test_a_calling_ae_outside_the_allow_list_is_rejected(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path,
                         ', allowed_calling_aets = ["MODALITY"]')
    host, port = engine.address("pacs")
    rc, out = await tool("echoscu", "-aet", "STRANGER", "-aec", "RADBRIDGE", host, str(port))
    assert rc != 0 and "Calling AE Title Not Recognized" in out, out
    rc, out = await tool("echoscu", "-aet", "MODALITY", "-aec", "RADBRIDGE", host, str(port))
    assert rc == 0, out


async def test_a_truncated_file_is_answered_0xc000_and_not_stored(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    good = write(synth_instance(generate_uid(), generate_uid(), 1), tmp_path / "good.dcm")
    bad = truncated(good, tmp_path / "bad.dcm", keep=0.6)
    status = await asyncio.to_thread(scu_store, engine.address("pacs"), bad, chunked=True)
    assert status.Status == 0xC000
    assert "truncated" in status.ErrorComment
    assert not list((tmp_path / "data").rglob("*.dcm"))


async def test_an_instance_with_a_malformed_study_uid_is_answered_0xa900_with_the_reason(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    with pydicom.config.disable_value_validation():
        ds = synth_instance("not-a-uid", generate_uid(), 1)
    path = write(ds, tmp_path / "bad-uid.dcm")
    status = await asyncio.to_thread(scu_store, engine.address("pacs"), path)
    assert (status.Status, status.ErrorComment) == (
        0xA900, "StudyInstanceUID is not a valid UID (not digits and dots)")


async def test_a_store_that_cannot_commit_is_answered_0xa700(
        engine_factory: Any, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await start(engine_factory, db_url, tmp_path)

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(engine.store, "add_instance", down)
    path = write(synth_instance(generate_uid(), generate_uid(), 1), tmp_path / "a.dcm")
    status = await asyncio.to_thread(scu_store, engine.address("pacs"), path)
    assert status.Status == 0xA700 and "retry later" in status.ErrorComment


async def test_orthanc_pushes_a_study_to_the_engine_over_c_store(
        engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc) -> None:
    engine = await start(engine_factory, db_url, tmp_path)
    study = write_study(tmp_path / "pacs", [("CR", 1), ("CT", 4)])
    for path in study.paths:
        answer = await orthanc.upload(path.read_bytes())
    host, port = engine.address("pacs")
    await orthanc.add_modality("radbridge", "RADBRIDGE", host, port)
    result = await orthanc.push_study("radbridge", answer["ParentStudy"])
    assert (result["InstancesCount"], result["FailedInstancesCount"]) == (5, 0), result
    await assert_study_indexed(engine, tmp_path, study, series=2)


async def test_dicom_tls_requires_a_client_certificate_from_our_ca(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    engine = await start(engine_factory, db_url, tmp_path,
                         f', tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}", '
                         f'client_ca = "{pki.ca_cert}" }}')
    port = str(engine.address("pacs")[1])
    base = ("-aet", "MODALITY", "-aec", "RADBRIDGE", "+cf", pki.ca_cert)
    rc, out = await tool("echoscu", "+tls", pki.client_key, pki.client_cert, *base,
                         "localhost", port)
    assert rc == 0, out
    rc, out = await tool("echoscu", "+tls", pki.rogue_key, pki.rogue_cert, *base,
                         "localhost", port)
    assert rc != 0, out
    rc, out = await tool("echoscu", "-aec", "RADBRIDGE", "localhost", port)  # plain TCP
    assert rc != 0, out
