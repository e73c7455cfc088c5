"""Issue 5's end-to-end path with real peers, and the latency from study completion to each
output (printed; run with ``-s`` to see it).

An ORM over MLLP → a chest radiograph by dcmtk's ``storescu`` (a real modality) → the case →
``demo-cxr`` (a DEMO model) → the ORU^R01 received and ACKed by a real MLLP listener, the FHIR
transaction Bundle received (and validated) by a FHIR endpoint on loopback, the SR stored in a
real Orthanc and read back over WADO-RS, and the case at the top of the worklist.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import hl7
import pydicom
from dicomweb_client.api import DICOMwebClient
from fhir.resources.R4B.bundle import Bundle

from channels.mllp.client import MLLPClient
from engine.flow.runtime import Engine
from mappings.hl7v2.ack import read_ack
from radbridge_fhir.validate import validate_bundle
from tests.fixtures.dicom import require
from tests.fixtures.fhir_server import fhir_server
from tests.fixtures.orthanc import Orthanc
from tests.fixtures.peers import HL7Sink
from tests.fixtures.studies import make_instance
from tests.integration.test_inference import real_chest_cr
from tests.integration.test_results_flow import demo_model, routine_orm

QUIET_SECS = 0.5


def e2e_config(db_url: str, tmp_path: Path, ehr: HL7Sink, fhir_url: str, pacs_url: str) -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path / 'data'}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
[[channel]]
name = "pacs-in"
source = {{ type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0" }}
study_quiet_secs = {QUIET_SECS}
[[channel]]
name = "ai-results"
source = {{ type = "ai_results" }}
forward_to = ["ehr", "ehr-fhir", "pacs-sr"]
[[channel]]
name = "ehr"
destination = {{ type = "mllp", endpoint = "{ehr.endpoint}" }}
[[channel]]
name = "ehr-fhir"
destination = {{ type = "fhir_rest", base_url = "{fhir_url}" }}
[[channel]]
name = "pacs-sr"
destination = {{ type = "dicomweb_stow", url = "{pacs_url}" }}
{demo_model()}"""


async def storescu(host: str, port: int, path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        require("storescu"), "-aet", "MODALITY", "-aec", "RADBRIDGE", host, str(port), str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def send(engine: Engine, *messages: bytes) -> None:
    client = MLLPClient(*engine.address("ris"))
    try:
        for m in messages:
            assert read_ack(await client.send(m))[0] in ("AA", "CA")  # MSH-15 AL: enhanced
    finally:
        await client.close()


async def first_time(checks: dict[str, Any], within: float = 120.0) -> dict[str, float]:
    """Poll every check every 10 ms; the wall-clock time each first became true."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + within
    while len(seen) < len(checks):
        for name, check in checks.items():
            if name not in seen:
                value = check()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    seen[name] = time.time()
        assert time.monotonic() < deadline, f"never seen: {set(checks) - set(seen)}"
        await asyncio.sleep(0.01)
    return seen


async def test_orm_and_storescu_study_come_back_as_oru_fhir_sr_and_a_raised_worklist(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    ehr = HL7Sink()
    await ehr.start()
    pacs = Orthanc(tmp_path / "orthanc")
    pacs.start()
    try:
        async with fhir_server() as fhir:
            engine = await engine_factory(e2e_config(db_url, tmp_path, ehr, fhir.url,
                                                     pacs.dicomweb))
            engine.assembler.sweep_secs = 0.05
            host, port = engine.address("pacs-in")

            # An older routine case that no model applies to, then the chest radiograph.
            await send(engine, routine_orm("E2E0", "ACC-E2E-OLD", "MRN0000"),
                       routine_orm("E2E1", "ACC-E2E", "MRN0001"))
            old = tmp_path / "old.dcm"
            old.write_bytes(make_instance("1.2.826.0.1.3680043.10.77.1", accession="ACC-E2E-OLD",
                                          patient_id="MRN0000", modality="MR",
                                          body_part="HEAD"))
            await storescu(host, port, old)
            part10, uid = real_chest_cr("ACC-E2E", "MRN0001")
            cr = tmp_path / "cr.dcm"
            cr.write_bytes(part10)
            await storescu(host, port, cr)

            async def study_complete() -> bool:
                study = await engine.store.get_study(uid)
                return study is not None and study.completed_at is not None

            async def worklist_raised() -> bool:
                rows = await engine.store.list_worklist()
                return bool(rows) and rows[0].study_uid == uid and rows[0].priority == "STAT"

            def sr_in_pacs() -> bool:
                return any(s.get("0008103E", {}).get("Value", [""])[0].startswith("DEMO")
                           for s in _series(pacs, uid))

            times = await first_time({
                "study complete": study_complete,
                "ORU ACKed": lambda: ehr.received,
                "FHIR Bundle": lambda: fhir.of_type("DiagnosticReport"),
                "SR in PACS": lambda: asyncio.to_thread(sr_in_pacs),
                "worklist STAT": worklist_raised,
            })

            # The ORU: what the EHR got, ACKed AA by a real listener.
            oru = hl7.parse(ehr.received[0].decode("latin-1").replace("\n", "\r"))
            assert str(oru.segment("OBR")[18]) == "ACC-E2E"
            assert "36118008" in str(oru) and str(oru.segment("OBR")[25]) == "P"
            # The FHIR Bundle: one transaction, valid, the report preliminary.
            (post,) = [r for r in fhir.requests if r.method == "POST" and r.path == "/"]
            bundle = json.loads(post.body)
            validate_bundle(bundle)
            Bundle.model_validate(bundle)
            (report,) = fhir.of_type("DiagnosticReport")
            assert report["status"] == "preliminary"
            # The SR: back from Orthanc over WADO-RS, intact.
            (sr,) = await asyncio.to_thread(_retrieve_sr, pacs, uid)
            assert sr.Manufacturer == "RADBRIDGE" and sr.VerificationFlag == "UNVERIFIED"
            assert sr.StudyInstanceUID == uid
            # The SR came back into no study revision: the study did not reopen.
            study = await engine.store.get_study(uid)
            assert study is not None and study.revision == 0
            # The worklist: the AI-raised case first, then the older routine one.
            rows = await engine.store.list_worklist()
            assert [r.accession for r in rows] == ["ACC-E2E", "ACC-E2E-OLD"]

            (audit,) = [a for a in await engine.store.list_audit() if a.model == "demo-cxr"]
            model_ms = audit.total_ms or 0.0
            done = times["study complete"]
            print(f"\nstudy complete → output (demo-cxr total {model_ms:.0f} ms, "
                  f"quiet period {QUIET_SECS:g} s not counted):")
            for name in ("ORU ACKed", "FHIR Bundle", "SR in PACS", "worklist STAT"):
                print(f"  {name:14} {(times[name] - done) * 1000:8.0f} ms")
    finally:
        pacs.stop()
        await ehr.stop()


def _client(pacs: Orthanc) -> DICOMwebClient:
    return DICOMwebClient(url=pacs.dicomweb)


def _series(pacs: Orthanc, study_uid: str) -> list[dict[str, Any]]:
    try:
        return list(_client(pacs).search_for_series(study_instance_uid=study_uid))
    except Exception:  # the study is not in the PACS yet
        return []


def _retrieve_sr(pacs: Orthanc, study_uid: str) -> list[pydicom.Dataset]:
    client = _client(pacs)
    out = []
    for series in client.search_for_series(study_instance_uid=study_uid):
        if series.get("00080060", {}).get("Value", [""])[0] == "SR":
            ds = client.retrieve_series(study_uid, series["0020000E"]["Value"][0])
            out.extend(ds)
    return [pydicom.dcmread(io.BytesIO(_bytes(d))) if not isinstance(d, pydicom.Dataset) else d
            for d in out]


def _bytes(obj: Any) -> bytes:
    return bytes(obj)
