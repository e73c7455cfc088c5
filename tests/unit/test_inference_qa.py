"""dicom-qa rules: dose against reference levels, laterality, slice thickness, body part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.config.inference import ModelConfig
from engine.store.inference import CaseContext
from inference.dicom_qa import RDSR_CLASS, DicomQA, parts_in
from inference.models import ModelOutput, StudyInput
from tests.unit.test_inference_series import ct_series, write_instance


def qa(**options: Any) -> DicomQA:
    return DicomQA(ModelConfig.model_validate({"name": "dicom-qa", "version": "1",
                                               "format": "builtin", "qa": options}))


def run(model: DicomQA, paths: list[Path], **case: Any) -> ModelOutput:
    ctx = CaseContext(1, "1.2.3", 0, "ready", **case)
    prepared = model.prepare(StudyInput(ctx, [str(p) for p in paths]))
    (out,) = model.run_batch([prepared])
    return out


def codes(out: ModelOutput) -> list[str]:
    return [f.code for f in out.findings]


def test_a_ct_head_above_the_reference_ctdivol_is_flagged(tmp_path: Path) -> None:
    paths = ct_series(tmp_path, 10, 5.0, CTDIvol=75.0, BodyPartExamined="HEAD")
    out = run(qa(), paths, procedure_text="CT HEAD WITHOUT CONTRAST")
    assert codes(out) == ["QA-DOSE-CTDIVOL"]
    f = out.findings[0]
    assert f.detail == "CTDIvol 75 mGy > reference 60 mGy (HEAD)"
    assert (f.coding_system, f.probability, f.model_name) == ("99RADBRIDGE", None, "dicom-qa")
    assert out.outputs["checks"] == {"dose": "flag", "laterality": "ok",
                                     "slice_thickness": "ok", "body_part": "ok"}


def test_dlp_is_estimated_from_ctdivol_and_scan_length(tmp_path: Path) -> None:
    # 40 slices x 5 mm = 20 cm; 55 mGy x 20 cm = 1100 mGy.cm > 1000
    paths = ct_series(tmp_path, 40, 5.0, CTDIvol=55.0, BodyPartExamined="HEAD")
    out = run(qa(), paths)
    assert codes(out) == ["QA-DOSE-DLP"]
    assert out.findings[0].detail == ("DLP 1100 mGy.cm (estimated: CTDIvol x scan length) > "
                                      "reference 1000 mGy.cm (HEAD)")


def _dose_sr(path: Path, dlp: float) -> Path:
    value = Dataset()
    value.NumericValue = str(dlp)
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator = "113813", "DCM"
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([name])
    item.MeasuredValueSequence = Sequence([value])
    container = Dataset()
    container.ContentSequence = Sequence([item])
    return write_instance(path, Modality="SR", SOPClassUID=RDSR_CLASS,
                          ContentSequence=Sequence([container]))


def test_a_dose_sr_in_the_study_gives_the_dlp(tmp_path: Path) -> None:
    paths = ct_series(tmp_path, 10, 1.0, CTDIvol=10.0, BodyPartExamined="CHEST")
    paths.append(_dose_sr(tmp_path / "rdsr.dcm", 750.0))
    out = run(qa(), paths)
    assert codes(out) == ["QA-DOSE-DLP"]
    assert "(dose SR)" in (out.findings[0].detail or "")
    assert out.outputs["dlp_source"] == "dose SR"


def test_reference_levels_are_configurable(tmp_path: Path) -> None:
    paths = ct_series(tmp_path, 10, 5.0, CTDIvol=75.0, BodyPartExamined="HEAD")
    model = qa(dose_reference=[{"body_part": "HEAD", "ctdivol_mgy": 80, "dlp_mgycm": 1500}])
    assert codes(run(model, paths)) == []


def test_a_knee_radiograph_without_laterality_is_flagged(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.uint16)
    left = write_instance(tmp_path / "l.dcm", img, BodyPartExamined="KNEE", ImageLaterality="L")
    bare = write_instance(tmp_path / "b.dcm", img, BodyPartExamined="KNEE")
    out = run(qa(), [left, bare])
    assert codes(out) == ["QA-LATERALITY"]
    assert out.findings[0].detail == "1 of 2 images of a paired body part (KNEE) lack laterality"
    assert codes(run(qa(), [left])) == []


def test_an_unpaired_body_part_needs_no_laterality(tmp_path: Path) -> None:
    chest = write_instance(tmp_path / "c.dcm", np.zeros((8, 8), np.uint16),
                           BodyPartExamined="CHEST")
    assert codes(run(qa(), [chest], procedure_text="XR CHEST PA")) == []


def test_thick_slices_against_the_protocol_are_flagged(tmp_path: Path) -> None:
    paths = ct_series(tmp_path, 10, 7.5, BodyPartExamined="CHEST")
    out = run(qa(), paths)
    assert codes(out) == ["QA-SLICE-THICKNESS"]
    assert out.findings[0].detail == "thinnest axial series 7.5 mm > protocol 5 mm (CHEST)"
    thin = ct_series(tmp_path, 10, 1.25, BodyPartExamined="CHEST")
    assert codes(run(qa(), paths + thin)) == []


def test_a_body_part_unlike_the_ordered_procedure_is_flagged(tmp_path: Path) -> None:
    head = write_instance(tmp_path / "h.dcm", np.zeros((8, 8), np.uint16),
                          BodyPartExamined="SKULL")
    out = run(qa(), [head], procedure_code="CXR2V", procedure_text="XR CHEST 2 VIEWS")
    assert codes(out) == ["QA-BODY-PART"]
    assert out.findings[0].detail == "images: HEAD; ordered: CHEST"


def test_a_procedure_code_map_decides_over_the_text(tmp_path: Path) -> None:
    chest = write_instance(tmp_path / "c.dcm", np.zeros((8, 8), np.uint16),
                           BodyPartExamined="THORAX")
    model = qa(procedure_body_part={"RIBS": ["CHEST"]})
    assert codes(run(model, [chest], procedure_code="RIBS", procedure_text="XR HAND")) == []
    assert codes(run(qa(), [chest], procedure_code="RIBS", procedure_text="XR HAND")) == [
        "QA-BODY-PART"]


def test_body_part_words_are_found_in_procedure_text() -> None:
    assert parts_in("CT ABD/PELVIS W CONTRAST") == {"ABDOMEN", "PELVIS"}
    assert parts_in("XR Chest PA+LAT") == {"CHEST"}
    assert parts_in(None) == set()


def test_the_checksum_changes_with_the_settings() -> None:
    assert qa().checksum == qa().checksum
    assert qa().checksum != qa(paired_body_parts=["KNEE"]).checksum
