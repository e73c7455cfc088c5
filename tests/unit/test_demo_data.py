"""The DEMO order and chest radiograph of ``radbridge demo``: made in code, labelled DEMO
everywhere a person could read them, valid, and meeting each other on their identifiers."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom

from mappings.demo import DEMO_PATIENT_NAME, DemoIds, demo_chest_radiograph, demo_order
from mappings.hl7v2.orders import OrderEvent, map_message
from tests.fixtures.dicom import require


def test_the_demo_order_maps_to_a_demo_patient_and_a_cr_order_for_the_demo_study() -> None:
    ids = DemoIds.new()
    event = map_message(demo_order(ids))
    assert isinstance(event, OrderEvent) and event.message_type == "ORM^O01"
    (order,) = event.orders
    assert (order.accession, order.study_instance_uid, order.modality) == (
        ids.accession,
        ids.study_uid,
        "CR",
    )
    assert event.control_id == ids.control_id and event.patient.family_name == "DEMO"
    assert all(v.startswith("DEMO") for v in (ids.patient_id, ids.accession, ids.control_id))
    assert "DEMO" in (order.procedure_text or "")


def test_two_demo_runs_never_share_an_identifier() -> None:
    a, b = DemoIds.new(), DemoIds.new()
    assert not {a.patient_id, a.accession, a.study_uid} & {b.patient_id, b.accession, b.study_uid}


def test_the_demo_radiograph_is_a_valid_cr_chest_image_labelled_demo(tmp_path: Path) -> None:
    ids = DemoIds.new()
    data = demo_chest_radiograph(ids)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert (ds.Modality, ds.BodyPartExamined, ds.StudyInstanceUID) == ("CR", "CHEST", ids.study_uid)
    assert (str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == (
        DEMO_PATIENT_NAME,
        ids.patient_id,
        ids.accession,
    )
    assert "DEMO" in ds.StudyDescription and "DEMO" in ds.SeriesDescription
    pixels = ds.pixel_array
    assert pixels.shape == (256, 256) and pixels.max() > 3 * pixels.min() + 1
    path = tmp_path / "demo.dcm"
    path.write_bytes(data)
    done = subprocess.run(
        [require("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    errors = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
