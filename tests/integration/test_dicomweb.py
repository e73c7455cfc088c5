"""DICOMweb sources against real peers: aiohttp and dicomweb-client as STOW-RS clients,
Orthanc's DICOMweb plugin pushing over STOW-RS, and the pollers following a real Orthanc."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from engine.errors import StoreUnavailable
from tests.conftest import wait_for
from tests.fixtures.certs import make_pki
from tests.fixtures.dicom import StudyFiles, part10, synth_instance, truncated, write_study
from tests.fixtures.orthanc import Orthanc

BOUNDARY = "radbridge-test-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED, FAILED, REASON = "00081199", "00081198", "00081197"


def stow_config(db_url: str, data_dir: Path, extra: str = "") -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{data_dir}"
[[channel]]
name = "web"
source = {{ type = "dicomweb", listen = "127.0.0.1:0"{extra} }}
"""


def poll_config(db_url: str, data_dir: Path, url: str, extra: str = "") -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{data_dir}"
[[channel]]
name = "poll"
source = {{ type = "dicomweb_poll", url = "{url}", poll_interval_secs = 0.1{extra} }}
"""


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> bytes:
    out = b""
    for data in parts:
        out += (f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n")
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, engine: Any, body: Any, path: str = "/studies",
               content_type: str = RELATED) -> tuple[int, Any]:
    host, port = engine.address("web")
    async with http.post(f"http://{host}:{port}{path}", data=body,
                         headers={"Content-Type": content_type}) as resp:
        text = await resp.text()
        if resp.content_type == "application/dicom+json":
            return resp.status, json.loads(text)
        return resp.status, text


def study_parts(tmp_path: Path, series: list[tuple[str, int]]) -> tuple[StudyFiles, list[bytes]]:
    study = write_study(tmp_path / "study", series)
    return study, [p.read_bytes() for p in study.paths]


async def test_stow_stores_a_multi_series_study_and_references_every_instance(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    study, parts = study_parts(tmp_path, [("DX", 2), ("CT", 3)])
    status, body = await post(http, engine, multipart(parts))
    assert status == 200 and FAILED not in body
    refs = {item["00081155"]["Value"][0] for item in body[REFERENCED]["Value"]}
    assert refs == {pydicom.dcmread(p).SOPInstanceUID for p in study.paths}
    row = await engine.store.get_study(study.uid)
    assert row is not None and (row.instance_count, row.series_count) == (5, 2)
    assert len(list((tmp_path / "data").rglob("*.dcm"))) == 5


async def test_one_bad_part_gives_202_with_its_failure_reason(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    study, parts = study_parts(tmp_path, [("CT", 3)])
    bad = truncated(study.paths[0], tmp_path / "bad.dcm", keep=0.7).read_bytes()
    status, body = await post(http, engine, multipart([*parts[1:], bad]))
    assert status == 202
    assert len(body[REFERENCED]["Value"]) == 2
    (failed,) = body[FAILED]["Value"]
    assert failed[REASON]["Value"] == [0xC000]
    assert failed["00081155"]["Value"] == [pydicom.dcmread(study.paths[0]).SOPInstanceUID]


async def test_every_part_failing_gives_409(engine_factory: Any, db_url: str, tmp_path: Path,
                                           http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    status, body = await post(http, engine, multipart([b"not dicom", b"\0" * 300]))
    assert status == 409 and REFERENCED not in body
    assert [i[REASON]["Value"] for i in body[FAILED]["Value"]] == [[0xC000], [0xC000]]


async def test_a_study_url_refuses_instances_of_another_study(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    study, parts = study_parts(tmp_path, [("CT", 1)])
    other = part10(synth_instance(generate_uid(), generate_uid(), 1))
    status, body = await post(http, engine, multipart([parts[0], other]),
                              path=f"/studies/{study.uid}")
    assert status == 202
    assert body[FAILED]["Value"][0][REASON]["Value"] == [0xC409]


@pytest.mark.parametrize("content_type", [
    "application/dicom", "application/json",
    f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'])
async def test_a_wrong_content_type_gives_415(engine_factory: Any, db_url: str, tmp_path: Path,
                                              http: aiohttp.ClientSession,
                                              content_type: str) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    status, text = await post(http, engine, multipart([b"x"]), content_type=content_type)
    assert status == 415 and 'type="application/dicom"' in text


async def test_a_body_over_the_limit_gives_413_before_it_is_read(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data",
                                              ", max_body_bytes = 65536"))
    _, parts = study_parts(tmp_path, [("CT", 10)])
    status, text = await post(http, engine, multipart(parts))
    assert status == 413 and "65536-byte limit" in text


async def test_a_chunked_body_over_the_limit_gives_413_while_streaming(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data",
                                              ", max_body_bytes = 65536"))
    _, parts = study_parts(tmp_path, [("CT", 10)])
    body = multipart(parts)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    status, text = await post(http, engine, chunks())
    assert status == 413 and "65536-byte limit" in text


@pytest.mark.parametrize("body", [b"no boundary anywhere", f"--{BOUNDARY}\r\n".encode(), b""])
async def test_a_malformed_multipart_body_gives_400_with_a_reason(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession,
        body: bytes) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    status, text = await post(http, engine, body)
    assert status == 400 and text.startswith("malformed multipart/related body")


async def test_an_unavailable_store_gives_503_with_retry_after(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(engine.store, "add_instances", down)
    _, parts = study_parts(tmp_path, [("CT", 2)])
    host, port = engine.address("web")
    async with http.post(f"http://{host}:{port}/studies", data=multipart(parts),
                         headers={"Content-Type": RELATED}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "30"
        body = await resp.json(content_type="application/dicom+json")
    assert [i[REASON]["Value"] for i in body[FAILED]["Value"]] == [[0xA700], [0xA700]]


async def test_dicomweb_client_stores_through_our_stow_endpoint(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data",
                                              ', path_prefix = "/dicom-web"'))
    study = write_study(tmp_path / "study", [("CR", 2)])
    host, port = engine.address("web")
    client = DICOMwebClient(f"http://{host}:{port}/dicom-web")
    datasets = [pydicom.dcmread(p) for p in study.paths]
    answer = await asyncio.to_thread(client.store_instances, datasets)
    assert len(answer.ReferencedSOPSequence) == 2
    row = await engine.store.get_study(study.uid)
    assert row is not None and row.instance_count == 2


async def test_orthanc_pushes_a_study_over_stow_rs(
        engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    study = write_study(tmp_path / "study", [("DX", 1), ("CT", 3)])
    for path in study.paths:
        answer = await orthanc.upload(path.read_bytes())
    host, port = engine.address("web")
    await orthanc.request("PUT", "/dicom-web/servers/radbridge",
                          json={"Url": f"http://{host}:{port}/"})
    await orthanc.request("POST", "/dicom-web/servers/radbridge/stow",
                          json={"Resources": [answer["ParentStudy"]], "Synchronous": True})
    row = await engine.store.get_study(study.uid)
    assert row is not None and (row.instance_count, row.series_count) == (4, 2)


async def upload_study(orthanc: Orthanc, study: StudyFiles) -> None:
    for path in study.paths:
        await orthanc.upload(path.read_bytes())


async def has_instances(engine: Any, uid: str, count: int) -> bool:
    row = await engine.store.get_study(uid)
    return row is not None and row.instance_count == count


async def test_the_orthanc_poller_ingests_a_study_uploaded_after_it_started(
        engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc) -> None:
    before = write_study(tmp_path / "before", [("CT", 2)])
    await upload_study(orthanc, before)
    engine = await engine_factory(poll_config(db_url, tmp_path / "data", orthanc.url))
    await wait_for(lambda: engine.sources["poll"].rounds > 0)
    study = write_study(tmp_path / "after", [("CR", 1), ("CT", 4)])
    await upload_study(orthanc, study)
    await wait_for(lambda: has_instances(engine, study.uid, 5), timeout=15)
    row = await engine.store.get_study(study.uid)
    assert row is not None and row.series_count == 2
    assert await engine.store.get_study(before.uid) is None  # start_from = "now"


async def test_the_orthanc_poller_resumes_from_its_saved_position_after_a_restart(
        engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc) -> None:
    text = poll_config(db_url, tmp_path / "data", orthanc.url,
                       ', start_from = "beginning", batch_size = 2')
    first = write_study(tmp_path / "first", [("CT", 3)])
    await upload_study(orthanc, first)
    engine = await engine_factory(text)
    await wait_for(lambda: has_instances(engine, first.uid, 3), timeout=15)
    await engine.stop()
    second = write_study(tmp_path / "second", [("CT", 2)])
    await upload_study(orthanc, second)
    engine = await engine_factory(text)
    await wait_for(lambda: has_instances(engine, second.uid, 2), timeout=15)
    assert engine.sources["poll"].fetched == 2  # nothing of the first study again


async def test_the_orthanc_poller_backs_off_while_the_pacs_is_down_then_catches_up(
        engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc) -> None:
    engine = await engine_factory(poll_config(db_url, tmp_path / "data", orthanc.url,
                                              ', start_from = "beginning"'))
    await wait_for(lambda: engine.sources["poll"].rounds > 0)
    orthanc.stop()
    await wait_for(lambda: engine.sources["poll"].errors >= 2, timeout=15)
    orthanc.start(fixed_ports=True)
    study = write_study(tmp_path / "late", [("DX", 2)])
    await upload_study(orthanc, study)
    await wait_for(lambda: has_instances(engine, study.uid, 2), timeout=30)


async def test_the_qido_poller_fetches_unseen_instances_with_wado_rs(
        engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc) -> None:
    engine = await engine_factory(poll_config(db_url, tmp_path / "data", orthanc.dicomweb,
                                              ', flavour = "qido"'))
    await wait_for(lambda: engine.sources["poll"].rounds > 0)
    today = f"{dt.date.today():%Y%m%d}"
    study = write_study(tmp_path / "q", [("CT", 2), ("CR", 1)], study_date=today)
    await upload_study(orthanc, study)
    await wait_for(lambda: has_instances(engine, study.uid, 3), timeout=15)
    extra = write_study(tmp_path / "q2", [("CT", 1)], study_date=today)
    ds = pydicom.dcmread(extra.paths[0])
    ds.StudyInstanceUID = study.uid  # a late instance of the same study
    await orthanc.upload(part10(ds))
    await wait_for(lambda: has_instances(engine, study.uid, 4), timeout=15)
    assert engine.sources["poll"].fetched == 4


async def test_stow_over_https_with_a_client_certificate(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    engine = await engine_factory(stow_config(
        db_url, tmp_path / "data", f', tls = {{ cert = "{pki.server_cert}", key = '
                                   f'"{pki.server_key}", client_ca = "{pki.ca_cert}" }}'))
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(pki.client_cert, pki.client_key)
    _, parts = study_parts(tmp_path, [("DX", 1)])
    url = f"https://localhost:{engine.address('web')[1]}/studies"
    async with aiohttp.ClientSession() as http, http.post(
            url, data=multipart(parts), headers={"Content-Type": RELATED}, ssl=ctx) as resp:
        assert resp.status == 200
    no_cert = ssl.create_default_context(cafile=str(pki.ca_cert))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.post(url, data=multipart(parts), headers={"Content-Type": RELATED},
                            ssl=no_cert)
