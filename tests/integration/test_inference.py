"""Inference through the engine: a correlated chest radiograph (the real PA chest CR from
pydicom-data) -> routing -> batching -> demo-cxr and dicom-qa -> findings and audit rows,
read back with the CLI. Also: de-identification for external models, batching across
studies, no model applies, and recovery of a case that was never routed."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from engine.flow.instances import InstanceIngest
from engine.flow.runtime import Engine
from engine.store.inference import CaseResult, JobState
from tests.conftest import REPO, wait_for
from tests.fixtures.studies import make_instance
from tests.integration.test_correlation import orm, send_hl7

MODELS = """
[[model]]
name = "demo-cxr"
version = "0.1.0"
format = "builtin"
batch_max = {batch_max}
max_wait_ms = {max_wait_ms}
external = {external}
[[model]]
name = "dicom-qa"
version = "1.0.0"
format = "builtin"
"""
ROUTES = """
[[route]]
name = "chest-radiographs"
when = { modality = ["CR", "DX"], body_part = "CHEST" }
models = ["demo-cxr"]
"""
CATCH_ALL = """
[[route]]
name = "every-study"
models = ["dicom-qa"]
"""


def write_config(tmp_path: Path, db_url: str, *, inference: bool = True, catch_all: bool = True,
                 batch_max: int = 8, max_wait_ms: int = 20, external: bool = False) -> str:
    text = f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
"""
    if inference:
        text += ROUTES + (CATCH_ALL if catch_all else "") + MODELS.format(
            batch_max=batch_max, max_wait_ms=max_wait_ms, external=str(external).lower())
    (tmp_path / "channels.toml").write_text(text)
    return text


async def start(engine_factory: Any, text: str, tmp_path: Path
                ) -> tuple[Engine, InstanceIngest, list[CaseResult]]:
    engine = await engine_factory(text)
    engine.assembler.sweep_secs = 0.05
    results: list[CaseResult] = []
    engine.result_listeners.append(results.append)
    return engine, InstanceIngest("pacs", engine.store, tmp_path, quiet_secs=0.2), results


def real_chest_cr(accession: str, patient: str = "MRN0001") -> tuple[bytes, str]:
    path = get_testdata_file("RG1_UNCI.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = generate_uid()
    ds.AccessionNumber, ds.PatientID, ds.IssuerOfPatientID = accession, patient, "GENHOSP"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue(), ds.StudyInstanceUID


async def cli(tmp_path: Path, *args: str) -> str:
    """Run a CLI command beside the in-process engine. In a thread: the engine's event loop
    must keep running, or a store transaction it holds open blocks the CLI's store."""
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "engine.cli", *args, "--config",
                         str(tmp_path / "channels.toml")], capture_output=True, text=True,
        cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_a_correlated_chest_radiograph_runs_both_builtin_models(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine, ingest, results = await start(engine_factory, write_config(tmp_path, db_url),
                                          tmp_path)
    await send_hl7(engine, orm("O1", "ACC-CXR1"))
    part10, uid = real_chest_cr("ACC-CXR1")
    await ingest.ingest(part10)
    await wait_for(lambda: results, timeout=60)
    (result,) = results
    assert result.case.study_uid == uid and result.case.accession == "ACC-CXR1"
    assert {(j.model, j.state, j.lane) for j in result.jobs} == {
        ("demo-cxr", JobState.DONE, 0), ("dicom-qa", JobState.DONE, 0)}  # STAT order: lane 0
    demo = [f for f in result.findings if f.model_name == "demo-cxr"]
    assert demo and all(f.demo and f.display.startswith("DEMO") for f in demo)
    assert not [f for f in result.findings if f.model_name == "dicom-qa"]  # a clean study

    audit = await cli(tmp_path, "audit", "--case", str(result.case.case_id), "--outputs")
    rows = [ln for ln in audit.splitlines()[1:] if ln.split()[0].isdigit()]
    assert len(rows) == 2 and all(" ok " in r and uid in r for r in rows)
    assert {r.split()[2] for r in rows} == {"demo-cxr", "dicom-qa"}
    assert '"view": "PA"' in audit and '"body_part": "ok"' in audit
    findings = await cli(tmp_path, "findings", "--case", str(result.case.case_id))
    assert "DEMO (not a clinical finding)" in findings
    assert "loaded" in await cli(tmp_path, "models")


async def test_an_external_model_sees_pseudonyms_and_results_come_back_relinked(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    text = write_config(tmp_path, db_url, catch_all=False, batch_max=4, max_wait_ms=1500,
                        external=True)
    engine, ingest, results = await start(engine_factory, text, tmp_path)
    accessions = [f"ACC-X{i}" for i in range(3)]
    await send_hl7(engine, *(orm(f"OX{i}", acc) for i, acc in enumerate(accessions)))
    series: dict[str, str] = {}
    for acc in accessions:
        uid, ser = generate_uid(), generate_uid()
        series[uid] = ser
        await ingest.ingest(make_instance(uid, series_uid=ser, accession=acc, size=64))
    await wait_for(lambda: len(results) == 3, timeout=60)
    audit = await engine.store.list_audit(model="demo-cxr")
    assert max(a.batch_size for a in audit) >= 2  # studies batched together
    for a in audit:
        assert a.study_uid in series  # findings and audit carry the real study
        seen_series = json.loads(a.outputs)["series"]
        assert seen_series != series[a.study_uid]  # the model saw a pseudonym ...
        assert await engine.store.real_for("uid", seen_series) == series[a.study_uid]  # ...kept


async def test_a_study_no_route_matches_closes_visibly_as_no_model(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine, ingest, results = await start(
        engine_factory, write_config(tmp_path, db_url, catch_all=False), tmp_path)
    await send_hl7(engine, orm("O2", "ACC-MR1"))
    await ingest.ingest(make_instance(generate_uid(), accession="ACC-MR1", modality="MR",
                                      body_part="KNEE"))
    await wait_for(lambda: results, timeout=30)
    assert results[0].no_model
    out = await cli(tmp_path, "findings", "--case", str(results[0].case.case_id))
    assert "no model applies (modality=MR body_part=KNEE" in out
    assert "no_model" in await cli(tmp_path, "jobs")


async def test_a_case_made_before_inference_was_configured_is_routed_at_start(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    plain, ingest, _ = await start(engine_factory,
                                   write_config(tmp_path, db_url, inference=False), tmp_path)
    await send_hl7(plain, orm("O3", "ACC-LATE"))
    await ingest.ingest(make_instance(generate_uid(), accession="ACC-LATE", size=64))
    await wait_for(lambda: plain.store.list_cases(), timeout=30)
    await plain.stop()
    engine, _, results = await start(engine_factory, write_config(tmp_path, db_url), tmp_path)
    await wait_for(lambda: results, timeout=60)
    assert {j.model for j in results[0].jobs} == {"demo-cxr", "dicom-qa"}
