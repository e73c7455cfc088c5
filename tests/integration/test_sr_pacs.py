"""The SR reaches a real PACS: STOW-RS and C-STORE into Orthanc, read back with WADO-RS.

Also, against scripted loopback peers (a pynetdicom SCP and an aiohttp STOW-RS server),
every answer a PACS can give and the error type each one becomes: success and warnings
are sent, 0xA7xx / 5xx / no connection are retried, other failures are rejected.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage  # type: ignore[attr-defined]

from channels.dicom.scu import StoreSCUConfig, StoreSCUDestination
from channels.dicomweb.destination import StowDestination, StowDestinationConfig
from engine.errors import (
    PeerRejected,
    PeerTimeout,
    PeerUnavailable,
    TransientDeliveryError,
)
from engine.results.model import AIReport
from mappings.dicom_sr import build_sr, sr_part10
from tests.fixtures.orthanc import Orthanc
from tests.fixtures.reports import sample_report

# pynetdicom 3.0 leaves the socket of a refused connection to the garbage collector
# (AssociationSocket._shutdown_socket: shutdown() raises ENOTCONN before close()), which
# CPython closes at once with a ResourceWarning. Only the tests that connect to nothing
# tolerate that warning; every other warning stays an error.
REFUSED_SOCKET = pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")


@pytest.fixture
def report(tmp_path: Path) -> AIReport:
    return sample_report(tmp_path / "study")


@pytest.fixture
def sr(report: AIReport) -> Dataset:
    return build_sr(report, report.models[0])


def stow_to(url: str, **kwargs: Any) -> StowDestination:
    return StowDestination("pacs-stow", StowDestinationConfig.model_validate(
        {"type": "dicomweb_stow", "url": url, **kwargs}))


def c_store_to(port: int, called_ae: str = "ORTHANC", **kwargs: Any) -> StoreSCUDestination:
    return StoreSCUDestination("pacs-dimse", StoreSCUConfig.model_validate(
        {"type": "dicom", "endpoint": f"127.0.0.1:{port}", "called_ae": called_ae, **kwargs}))


async def wado(orthanc: Orthanc, sr: Dataset) -> Dataset:
    """WADO-RS retrieve of the instance (dicomweb-client blocks: it runs in a thread)."""
    client = DICOMwebClient(orthanc.dicomweb)
    return await asyncio.to_thread(client.retrieve_instance, sr.StudyInstanceUID,
                                   sr.SeriesInstanceUID, sr.SOPInstanceUID)


async def sr_instances(orthanc: Orthanc, sr: Dataset) -> list[str]:
    """SOP Instance UIDs Orthanc holds in the SR's series (QIDO-RS)."""
    found = await orthanc.request(
        "GET", f"/dicom-web/studies/{sr.StudyInstanceUID}/series/{sr.SeriesInstanceUID}"
               "/instances", headers={"Accept": "application/dicom+json"})
    if isinstance(found, bytes):
        found = json.loads(found) if found else []
    return [i["00080018"]["Value"][0] for i in found]


def assert_same_sr(got: Dataset, sent: Dataset) -> None:
    """What the PACS returns is what we built, element for element (file meta aside)."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                    "Manufacturer", "SeriesDescription", "CompletionFlag", "VerificationFlag",
                    "PatientID", "ContentDate", "ContentTime"):
        assert got[keyword].value == sent[keyword].value, keyword
    assert got.ContentSequence == sent.ContentSequence
    assert got.CurrentRequestedProcedureEvidenceSequence == \
        sent.CurrentRequestedProcedureEvidenceSequence


def finding_codes(ds: Dataset) -> set[str]:
    return {item.ConceptCodeSequence[0].CodeValue
            for group in ds.ContentSequence if group.ValueType == "CONTAINER"
            for sub in group.get("ContentSequence", [])
            for item in sub.get("ContentSequence", [])
            if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "121071"}


# -- Orthanc ------------------------------------------------------------------------------


async def test_stow_rs_stores_the_sr_and_wado_rs_returns_it_unchanged(
        orthanc: Orthanc, report: AIReport, sr: Dataset) -> None:
    stow = stow_to(orthanc.dicomweb)
    try:
        answer = await stow.send(sr_part10(sr))
    finally:
        await stow.close()
    assert sr.SOPInstanceUID in answer.decode()  # the Store Instances Response names it
    got = await wado(orthanc, sr)
    assert_same_sr(got, sr)
    assert finding_codes(got) == {f.code for f in report.findings}


async def test_c_store_stores_the_sr_and_wado_rs_returns_it_unchanged(
        orthanc: Orthanc, report: AIReport, sr: Dataset) -> None:
    scu = c_store_to(orthanc.dicom_port, calling_ae="RADBRIDGE")
    try:
        answer = await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert answer.startswith(b"0x0000 Success")
    got = await wado(orthanc, sr)
    assert_same_sr(got, sr)
    assert finding_codes(got) == {f.code for f in report.findings}


async def test_resending_the_same_sr_leaves_one_instance(orthanc: Orthanc, report: AIReport,
                                                         sr: Dataset) -> None:
    again = sr_part10(build_sr(report, report.models[0]))  # rebuilt: the same UIDs
    stow, scu = stow_to(orthanc.dicomweb), c_store_to(orthanc.dicom_port)
    try:
        await stow.send(sr_part10(sr))
        await stow.send(again)
        await scu.send(again)
    finally:
        await stow.close()
        await scu.close()
    assert await sr_instances(orthanc, sr) == [sr.SOPInstanceUID]


@REFUSED_SOCKET
async def test_orthanc_down_is_transient_and_its_return_delivers(orthanc: Orthanc,
                                                                 sr: Dataset) -> None:
    payload = sr_part10(sr)
    stow, scu = stow_to(orthanc.dicomweb, timeout_secs=5), c_store_to(orthanc.dicom_port,
                                                                       timeout_secs=5)
    try:
        orthanc.stop()
        with pytest.raises(PeerUnavailable):
            await stow.send(payload)
        with pytest.raises(PeerUnavailable):
            await scu.send(payload)
        orthanc.start(fixed_ports=True)
        assert await scu.send(payload) == b"0x0000 Success"
        assert sr.SOPInstanceUID.encode() in await stow.send(payload)
    finally:
        await stow.close()
        await scu.close()
    assert await sr_instances(orthanc, sr) == [sr.SOPInstanceUID]


async def test_orthanc_refusing_the_instance_over_stow_is_a_rejection(orthanc: Orthanc,
                                                                      sr: Dataset) -> None:
    del sr.StudyInstanceUID  # Orthanc cannot index it: FailedSOPSequence, 0xC000
    stow = stow_to(orthanc.dicomweb)
    try:
        with pytest.raises(PeerRejected) as caught:
            await stow.send(sr_part10(sr))
    finally:
        await stow.close()
    assert "0xC000" in caught.value.reason
    assert caught.value.response is not None  # the peer's answer is kept for the record


async def test_a_pacs_that_accepts_no_context_for_the_sr_is_a_rejection(
        tmp_path: Path, sr: Dataset) -> None:
    jpeg_only = Orthanc(tmp_path / "jpeg-only",
                        extra={"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2.4.50"]})
    jpeg_only.start()
    scu = c_store_to(jpeg_only.dicom_port)
    try:
        with pytest.raises(PeerRejected) as caught:
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()
        jpeg_only.stop()
    assert caught.value.code == "no context"
    assert "Comprehensive 3D SR" in caught.value.reason


# -- a scripted C-STORE SCP ---------------------------------------------------------------


class ScriptedSCP:
    """A pynetdicom SCP on loopback answering each C-STORE with ``status`` (after
    ``delay`` seconds); counts associations and what it received."""

    def __init__(self, status: int = 0x0000, comment: str = "", delay: float = 0.0,
                 ae_title: str = "PACS") -> None:
        self.status, self.comment, self.delay = status, comment, delay
        self.associations = 0
        self.received: list[str] = []
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        ae.add_supported_context(Comprehensive3DSRStorage,
                                 [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted)])
        assert server is not None
        self.server = server
        self.port = int(server.server_address[1])
        self._lock = threading.Lock()

    def _on_accepted(self, event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _on_store(self, event: Any) -> Dataset:
        time.sleep(self.delay)
        self.received.append(str(event.dataset.SOPInstanceUID))
        answer = Dataset()
        answer.Status = self.status
        if self.comment:
            answer.ErrorComment = self.comment
        return answer

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp() -> Iterator[ScriptedSCP]:
    peer = ScriptedSCP()
    yield peer
    peer.stop()


@pytest.mark.parametrize(("status", "sent"), [(0x0000, "Success"), (0xB000, "Warning"),
                                               (0xB007, "Warning")])
async def test_c_store_success_and_warnings_are_sent(scp: ScriptedSCP, sr: Dataset,
                                                     status: int, sent: str) -> None:
    scp.status = status
    scu = c_store_to(scp.port, called_ae="PACS")
    try:
        answer = await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert answer.decode().startswith(f"0x{status:04X} {sent}")
    assert scp.received == [sr.SOPInstanceUID]


@pytest.mark.parametrize("status", [0xA900, 0xC000, 0x0122])
async def test_c_store_failure_statuses_are_rejections_with_their_text(
        scp: ScriptedSCP, sr: Dataset, status: int) -> None:
    scp.status, scp.comment = status, "bad SR"
    scu = c_store_to(scp.port, called_ae="PACS")
    try:
        with pytest.raises(PeerRejected) as caught:
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert caught.value.code == f"0x{status:04X}"
    assert "Failure" in caught.value.reason and "bad SR" in caught.value.reason


async def test_c_store_out_of_resources_is_retried(scp: ScriptedSCP, sr: Dataset) -> None:
    scp.status = 0xA700
    scu = c_store_to(scp.port, called_ae="PACS")
    try:
        with pytest.raises(PeerUnavailable, match="0xA700"):
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()


async def test_c_store_refused_max_refusals_times_in_a_row_fails_the_delivery(
        scp: ScriptedSCP, sr: Dataset) -> None:
    """Orthanc answers 0xA700 for every failed store: with max_refusals the queue moves on."""
    scp.status = 0xA700
    scu = c_store_to(scp.port, called_ae="PACS", max_refusals=3)
    try:
        for _ in range(2):
            with pytest.raises(PeerUnavailable, match="0xA700"):
                await scu.send(sr_part10(sr))
        with pytest.raises(PeerRejected, match="refused 3 times in a row") as caught:
            await scu.send(sr_part10(sr))
        scp.status = 0x0000  # the count is per instance and starts again after a success
        assert (await scu.send(sr_part10(sr))).startswith(b"0x0000")
        scp.status = 0xA700
        with pytest.raises(PeerUnavailable):
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert caught.value.code == "0xA700"
    assert len(scp.received) == 5


async def test_c_store_reuses_one_association_for_several_instances(
        scp: ScriptedSCP, sr: Dataset) -> None:
    scu = c_store_to(scp.port, called_ae="PACS")
    try:
        for _ in range(3):
            await scu.send(sr_part10(sr))
        assert (scp.associations, len(scp.received)) == (1, 3)
        await scu.close()  # released; the next send negotiates a new association
        await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert (scp.associations, len(scp.received)) == (2, 4)


async def test_an_idle_association_is_renewed_after_keep_open_secs(
        scp: ScriptedSCP, sr: Dataset) -> None:
    scu = c_store_to(scp.port, called_ae="PACS", keep_open_secs=0)
    try:
        for _ in range(2):
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert (scp.associations, len(scp.received)) == (2, 2)


async def test_an_association_rejected_is_transient(scp: ScriptedSCP, sr: Dataset) -> None:
    scu = c_store_to(scp.port, called_ae="NOT-THE-PACS")  # the SCP requires its own title
    try:
        with pytest.raises(PeerUnavailable, match="rejected"):
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()
    assert scp.received == []


async def test_no_c_store_response_in_time_is_a_timeout(sr: Dataset) -> None:
    slow = ScriptedSCP(delay=3.0)
    scu = c_store_to(slow.port, called_ae="PACS", timeout_secs=1)
    try:
        with pytest.raises(PeerTimeout):
            await scu.send(sr_part10(sr))
    finally:
        await scu.close()
        slow.stop()


async def test_the_event_loop_runs_while_a_c_store_waits(sr: Dataset) -> None:
    slow = ScriptedSCP(delay=1.0)
    scu = c_store_to(slow.port, called_ae="PACS")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await scu.send(sr_part10(sr))
    finally:
        ticker.cancel()
        await scu.close()
        slow.stop()
    assert ticks >= 10  # about 20 in the second the SCP waited


async def test_a_payload_that_is_not_dicom_is_rejected_without_a_connection(
        scp: ScriptedSCP) -> None:
    scu = c_store_to(scp.port, called_ae="PACS")
    try:
        with pytest.raises(PeerRejected, match="not a DICOM"):
            await scu.send(b"MSH|^~\\&|not dicom")
    finally:
        await scu.close()
    assert scp.associations == 0


# -- a scripted STOW-RS server ------------------------------------------------------------


def store_response(sop_uid: str, failure: int | None = None) -> bytes:
    item = {"00081150": {"vr": "UI", "Value": [Comprehensive3DSRStorage]},
            "00081155": {"vr": "UI", "Value": [sop_uid]}}
    if failure is None:
        return json.dumps({"00081199": {"vr": "SQ", "Value": [item]}}).encode()
    item["00081197"] = {"vr": "US", "Value": [failure]}
    return json.dumps({"00081198": {"vr": "SQ", "Value": [item]}}).encode()


class ScriptedStow:
    """An aiohttp STOW-RS endpoint answering ``status``, ``body`` and ``headers`` (after
    ``delay`` seconds); records requests."""

    def __init__(self) -> None:
        self.status, self.body, self.delay = 200, b"{}", 0.0
        self.headers: dict[str, str] = {}
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body, headers=self.headers,
                            content_type="application/dicom+json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/dicom-web/studies", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/dicom-web"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def stow_peer() -> AsyncIterator[ScriptedStow]:
    peer = ScriptedStow()
    await peer.start()
    yield peer
    await peer.stop()


async def test_stow_sends_one_dicom_part_with_the_payload(stow_peer: ScriptedStow,
                                                          sr: Dataset) -> None:
    payload = sr_part10(sr)
    stow_peer.body = store_response(sr.SOPInstanceUID)
    stow = stow_to(stow_peer.url)
    try:
        assert await stow.send(payload) == stow_peer.body
    finally:
        await stow.close()
    [(headers, body)] = stow_peer.requests
    assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    boundary = headers["Content-Type"].split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode()) and payload in body
    assert headers["Accept"] == "application/dicom+json"
    assert "Authorization" not in headers


@pytest.mark.parametrize(("status", "failure", "error"), [
    (409, 0xA900, PeerRejected),  # conflict: the instance does not fit what the PACS holds
    (202, 0xC000, PeerRejected),  # partly stored... but ours failed
    (202, 0xA700, PeerUnavailable),  # out of resources: later
    (400, None, PeerRejected),
    (403, None, PeerRejected),
    (503, None, PeerUnavailable),
    (500, None, PeerUnavailable),
    (429, None, PeerUnavailable),
])
async def test_stow_answers_become_rejections_or_retries(
        stow_peer: ScriptedStow, sr: Dataset, status: int, failure: int | None,
        error: type[Exception]) -> None:
    stow_peer.status = status
    stow_peer.body = (store_response(sr.SOPInstanceUID, failure) if failure is not None
                      else b'{"error": "no"}')
    stow = stow_to(stow_peer.url)
    try:
        with pytest.raises(error) as caught:
            await stow.send(sr_part10(sr))
    finally:
        await stow.close()
    assert str(status) in str(caught.value)
    if failure is not None:
        assert f"0x{failure:04X}" in str(caught.value)


async def test_stow_basic_auth_reads_the_password_from_the_environment(
        stow_peer: ScriptedStow, sr: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_TEST_PACS_PASSWORD", "s3cret")
    stow = stow_to(stow_peer.url, auth="basic", username="radbridge",
                   password_env="RB_TEST_PACS_PASSWORD")
    try:
        await stow.send(sr_part10(sr))
        monkeypatch.delenv("RB_TEST_PACS_PASSWORD")
        with pytest.raises(PeerRejected, match="RB_TEST_PACS_PASSWORD is not set"):
            await stow.send(sr_part10(sr))
    finally:
        await stow.close()
    assert stow_peer.requests[0][0]["Authorization"] == "Basic cmFkYnJpZGdlOnMzY3JldA=="
    assert len(stow_peer.requests) == 1  # nothing went out without the secret


async def test_stow_bearer_token_comes_from_a_file(stow_peer: ScriptedStow, sr: Dataset,
                                                   tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    os.chmod(token, 0o600)
    stow = stow_to(stow_peer.url, auth="bearer", token_file=str(token))
    try:
        await stow.send(sr_part10(sr))
    finally:
        await stow.close()
    assert stow_peer.requests[0][0]["Authorization"] == "Bearer tok-123"


async def test_a_slow_stow_peer_is_a_timeout(stow_peer: ScriptedStow, sr: Dataset) -> None:
    stow_peer.delay = 2.0
    stow = stow_to(stow_peer.url, timeout_secs=0.5)
    try:
        with pytest.raises(PeerTimeout):
            await stow.send(sr_part10(sr))
    finally:
        await stow.close()


@REFUSED_SOCKET
async def test_every_pacs_error_is_typed_for_the_delivery_worker(sr: Dataset) -> None:
    """Nothing else escapes ``send``: the worker retries or records by type alone."""
    scu = c_store_to(1, timeout_secs=1)  # port 1: nothing listens there
    stow = stow_to("http://127.0.0.1:1/dicom-web", timeout_secs=1)
    try:
        for destination in (scu, stow):
            with pytest.raises(TransientDeliveryError):
                await destination.send(sr_part10(sr))
    finally:
        await scu.close()
        await stow.close()
