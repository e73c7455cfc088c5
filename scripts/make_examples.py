"""Write docs/examples/: what radbridge sends for one AI report, built by the engine's own code.

    .venv/bin/python scripts/make_examples.py [OUT_DIR]   # default: docs/examples

The report is fixed (fixed UIDs, times and a synthetic CR study), so the files
are reproducible; ``tests/unit/test_examples.py`` rebuilds them and fails when
the committed ones are stale. The findings are labelled DEMO: they illustrate
the format, they are not a clinical result.

Files: the ORU^R01 (v2.5.1 and v2.3.1) and the RIS order update (segments one
per line here; ``\\r`` on the wire), the FHIR transaction Bundle with its
priority Task, the DICOM SR (as DICOM JSON, pixel-free), the webhook alert.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STUDY_UID = "1.2.826.0.1.3680043.10.1247.1"
SERIES_UID = "1.2.826.0.1.3680043.10.1247.1.1"
SOP_UID = "1.2.826.0.1.3680043.10.1247.1.1.1"


def example_report(directory: Path) -> Any:
    from engine.model import Finding
    from engine.results.model import (
        AIReport,
        ModelRun,
        ReportOrder,
        ReportPatient,
        SourceInstance,
    )
    from tests.fixtures.dicom import synth_instance, write

    ds = synth_instance(STUDY_UID, SERIES_UID, 1, modality="CR", patient_id="EX12345",
                        accession="EXACC001", study_date="20261130")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "EXAMPLE^PATIENT", "19700101", "F"
    path = write(ds, directory / "cr.dcm")
    model = "demo-cxr", "0.1.0"
    findings = [
        Finding("36118008", "Pneumothorax", "SCT", 0.93, True, *model, location="Right lung",
                demo=True, criticality="critical"),
        Finding("60046008", "Pleural effusion", "SCT", 0.61, False, *model, demo=True,
                criticality="low"),
    ]
    return AIReport(
        case_id=1247, revision=0, study_uid=STUDY_UID,
        patient=ReportPatient("EX12345", "EXAMPLEHOSP", "EXAMPLE", "PATIENT", "19700101", "F"),
        order=ReportOrder("PL1247", "FI1247", "EXACC001", "RP1247", "71046",
                          "XR CHEST 2 VIEWS", "CPT", "R", "CR"),
        findings=findings, models=[ModelRun(*model, demo=True)],
        instances=[SourceInstance(SERIES_UID, SOP_UID, str(ds.SOPClassUID), str(path), "CR")],
        accession="EXACC001", modality="CR", body_part="CHEST",
        study_completed_at=1_796_040_000.0, reported_at=1_796_040_001.25)


def _lines(hl7: bytes) -> str:
    return hl7.decode().replace("\r", "\n")


def build(out: Path) -> list[Path]:
    from engine.results.channel import alert_payload, escalate
    from mappings.dicom_sr import build_sr
    from mappings.hl7v2.order_update import build_order_update
    from mappings.hl7v2.oru import build_oru
    from radbridge_fhir.bundle import build_bundle
    from radbridge_fhir.task import priority_task

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = example_report(Path(tmp))
        priority, reason, _ = escalate(report, [])
        bundle = build_bundle(report)
        bundle["entry"].append(priority_task(bundle, report, priority, reason or ""))
        sr = build_sr(report, report.models[0])
        sr_json = sr.to_json_dict(bulk_data_threshold=1 << 20)
        files = {
            "oru_r01_v251.hl7": _lines(build_oru(report)),
            "oru_r01_v231.hl7": _lines(build_oru(report, version="2.3.1")),
            "order_update_orm_o01.hl7": _lines(build_order_update(report, "S", reason or "")),
            "fhir_bundle.json": json.dumps(bundle, indent=2, sort_keys=True) + "\n",
            "sr_tid1500.json": json.dumps(sr_json, indent=2, sort_keys=True) + "\n",
            "webhook_alert.json": json.dumps(json.loads(alert_payload(report, priority,
                                                                      reason or "")),
                                             indent=2, sort_keys=True) + "\n",
        }
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "examples"
    for path in build(out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
