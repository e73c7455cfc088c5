"""The DICOM SR (TID 1500) built from an AI report: valid (dciodvfy), read back item by item.

Every expectation comes from the report the SR was built from (``sample_report``), never
from constants copied out of the builder.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from channels.dicom.part10 import read_meta
from engine.model import Finding
from engine.results.model import AIReport, ModelRun, SourceInstance
from mappings.dicom_sr import build_sr, series_description, sr_part10
from tests.fixtures.dicom import require, synth_instance, write
from tests.fixtures.reports import sample_report

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def dciodvfy(ds: Dataset, path: Path) -> list[str]:
    """Write the SR, run dicom3tools' validator on it, print its warnings, return its lines."""
    path.write_bytes(sr_part10(ds))
    done = subprocess.run([require("dciodvfy"), str(path)], capture_output=True, text=True,
                          timeout=60)
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    for line in lines:
        if line.startswith("Warning"):
            print("dciodvfy:", line)
    return lines


def reread(ds: Dataset) -> hd.sr.Comprehensive3DSR:
    """Through the bytes, as a PACS gets it."""
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_part10(ds))))


def tid1500(sr: hd.sr.Comprehensive3DSR) -> hd.sr.MeasurementReport:
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def groups(sr: hd.sr.Comprehensive3DSR) -> list[Any]:
    return list(tid1500(sr).get_image_measurement_groups())


def texts(items: Any, code: str) -> list[str]:
    """TEXT values under concept *code* among *items*' direct children."""
    return [str(i.TextValue) for i in items
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == code]


@pytest.fixture
def report(tmp_path: Path) -> AIReport:
    return sample_report(tmp_path / "study")


@pytest.mark.parametrize("case", ["findings", "negative", "demo", "failed"])
def test_every_kind_of_sr_passes_dciodvfy_without_errors(tmp_path: Path, case: str) -> None:
    report = sample_report(tmp_path / "study", findings=case != "negative", demo=case == "demo")
    model = report.models[0]
    if case == "failed":
        model = dataclasses.replace(model, state="error")
    lines = dciodvfy(build_sr(report, model), tmp_path / "sr.dcm")
    assert lines and lines[0] == "Comprehensive3DSR", lines  # the IOD it checked against
    assert not [ln for ln in lines if "Error" in ln], lines


def test_each_finding_is_a_group_with_its_code_presence_and_probability(report: AIReport
                                                                        ) -> None:
    model = report.models[0]
    expected = report.findings_of(model.name, model.version)
    got = groups(reread(build_sr(report, model)))
    assert len(got) == len(expected) >= 2
    for group, finding in zip(got, expected, strict=True):
        assert (group.finding_type.value, group.finding_type.scheme_designator,
                group.finding_type.meaning) == (finding.code, finding.coding_system,
                                                finding.display)
        [presence] = group.get_qualitative_evaluations()
        assert presence.name == hd.sr.CodedConcept("121052", "DCM", "Presence of property")
        assert presence.value == hd.sr.CodedConcept("121053", "DCM", "Present")
        [measurement] = group.get_measurements()
        assert measurement.value == pytest.approx(finding.probability)
        assert (measurement.unit.value, measurement.unit.scheme_designator) == ("1", "UCUM")
        assert measurement.name.value == "111012"  # Certainty of Finding
        assert finding.code in group.tracking_identifier
        items = group[0].ContentSequence  # the Measurement Group container's children
        assert texts(items, "111001") == [model.name]  # Algorithm Name
        assert texts(items, "111003") == [model.version]  # Algorithm Version


def test_a_location_becomes_a_coded_finding_site_with_laterality(report: AIReport) -> None:
    located = [f for f in report.findings if f.location]
    assert located and located[0].location == "Right lung"
    group = groups(reread(build_sr(report, report.models[0])))[report.findings.index(located[0])]
    [site] = group.finding_sites
    assert (site.value.value, site.value.scheme_designator) == ("39607008", "SCT")  # Lung
    assert site.laterality.value == "24028007"  # Right
    unlocated = groups(reread(build_sr(report, report.models[0])))[
        next(i for i, f in enumerate(report.findings) if not f.location)]
    assert unlocated.finding_sites == []


def test_an_unknown_location_keeps_its_words_as_a_local_code(report: AIReport) -> None:
    report.findings[0] = dataclasses.replace(report.findings[0],
                                             location="Left retrocardiac region")
    [site] = groups(reread(build_sr(report, report.models[0])))[0].finding_sites
    assert site.value.scheme_designator == "99RADBRIDGE"
    assert site.value.meaning == "retrocardiac region"
    assert site.laterality.value == "7771000"  # Left


def test_the_observer_is_the_model_as_a_device_made_by_radbridge(report: AIReport) -> None:
    model = report.models[0]
    sr = reread(build_sr(report, model))
    [context] = tid1500(sr).get_observer_contexts(observer_type=hd.sr.CodedConcept(
        "121007", "DCM", "Device"))
    attrs = context[1:]
    assert texts(attrs, "121013") == [model.name]  # Device Observer Name
    assert texts(attrs, "121014") == ["RADBRIDGE"]  # Device Observer Manufacturer
    assert texts(attrs, "121015") == [f"{model.name} {model.version}"]  # Model Name
    assert sr.Manufacturer == "RADBRIDGE"


def test_the_evidence_lists_every_source_instance_of_the_report(report: AIReport) -> None:
    sr = reread(build_sr(report, report.models[0]))
    [study] = sr.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == report.study_uid == sr.StudyInstanceUID
    referenced = {(s.SeriesInstanceUID, i.ReferencedSOPInstanceUID, i.ReferencedSOPClassUID)
                  for s in study.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert referenced == {(i.series_uid, i.sop_uid, i.sop_class_uid) for i in report.instances}
    for group in groups(sr):  # each finding names the images the model read
        assert {s.referenced_sop_instance_uid for s in group.source_images} == \
            {i.sop_uid for i in report.instances}


def test_the_evidence_covers_a_study_of_several_series(tmp_path: Path,
                                                       report: AIReport) -> None:
    for series in (2, 3):
        series_uid = generate_uid()
        for number in (1, 2):
            ds = synth_instance(report.study_uid, series_uid, number, modality="CR",
                                series_number=series)
            path = write(ds, tmp_path / f"s{series}" / f"i{number}.dcm")
            report.instances.append(SourceInstance(series_uid, ds.SOPInstanceUID,
                                                   ds.SOPClassUID, str(path), "CR"))
    sr = reread(build_sr(report, report.models[0]))
    [study] = sr.CurrentRequestedProcedureEvidenceSequence
    assert {(s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
            for s in study.ReferencedSeriesSequence for i in s.ReferencedSOPSequence} == \
        {(i.series_uid, i.sop_uid) for i in report.instances}
    assert len(report.instances) == 5


def test_patient_and_study_come_from_the_source_images(report: AIReport) -> None:
    source = pydicom.dcmread(report.instances[0].path, stop_before_pixels=True)
    sr = build_sr(report, report.models[0])
    for keyword in ("PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyID"):
        assert sr[keyword].value == source[keyword].value


def test_uids_are_deterministic_and_differ_per_model_version(tmp_path: Path,
                                                             report: AIReport) -> None:
    model = report.models[0]
    first, again = sr_part10(build_sr(report, model)), sr_part10(build_sr(report, model))
    assert first == again  # the same bytes: a re-send replaces, never duplicates
    sr = build_sr(report, model)
    assert sr.SOPInstanceUID == report.uid("sr", model.name, model.version, "instance")
    assert sr.SeriesInstanceUID == report.uid("sr", model.name, model.version, "series")
    newer = dataclasses.replace(model, version="1.3.0")
    other = build_sr(report, newer)
    assert other.SOPInstanceUID != sr.SOPInstanceUID
    assert other.SeriesInstanceUID != sr.SeriesInstanceUID
    assert groups(reread(other))[0].get_qualitative_evaluations()[0].value.meaning == "Absent"


def test_content_date_is_the_report_time_not_the_clock(report: AIReport) -> None:
    sr = build_sr(report, report.models[0])
    when = report.reported_datetime()
    assert (sr.ContentDate, sr.ContentTime[:6]) == (when.strftime("%Y%m%d"),
                                                    when.strftime("%H%M%S"))


def test_ai_output_is_preliminary_unverified_and_complete(report: AIReport) -> None:
    sr = build_sr(report, report.models[0])
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == \
        ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    model = report.models[0]
    assert sr.SeriesDescription == f"{model.name} {model.version} AI preliminary (second read)"


def test_a_demo_model_says_demo_in_the_series_description(tmp_path: Path) -> None:
    report = sample_report(tmp_path, demo=True)
    assert build_sr(report, report.models[0]).SeriesDescription.startswith("DEMO ")


def test_a_long_model_name_keeps_demo_and_the_second_read_wording() -> None:
    text = series_description(ModelRun(name="x" * 80, version="9.9.9"), demo=True)
    assert len(text) <= 64 and text.startswith("DEMO ")
    assert text.endswith("AI preliminary (second read)")


def test_a_model_without_finding_states_a_negative_result(tmp_path: Path) -> None:
    report = sample_report(tmp_path, findings=False)
    sr = reread(build_sr(report, report.models[0]))
    [group] = groups(sr)
    assert (group.finding_type.value, group.finding_type.scheme_designator) == \
        ("404684003", "SCT")
    [presence] = group.get_qualitative_evaluations()
    assert presence.value == hd.sr.CodedConcept("121054", "DCM", "Absent")
    assert group.get_measurements() == []
    assert sr.CompletionFlag == "COMPLETE"


def test_a_failed_model_gives_a_partial_sr_that_concludes_nothing(report: AIReport) -> None:
    failed = dataclasses.replace(report.models[0], state="error")
    sr = reread(build_sr(report, failed))
    assert sr.CompletionFlag == "PARTIAL"
    [group] = groups(sr)  # its findings (if any) are not reported: the run did not finish
    [presence] = group.get_qualitative_evaluations()
    assert presence.value == hd.sr.CodedConcept("121059", "DCM", "Presence Undetermined")
    assert group.get_measurements() == []


def test_only_the_findings_of_that_model_are_reported(report: AIReport) -> None:
    other = ModelRun(name="fracture-finder", version="0.4.0")
    report.models.append(other)
    report.findings.append(Finding(code="72704001", display="Fracture", coding_system="SCT",
                                   probability=0.55, critical=False, model_name=other.name,
                                   model_version=other.version))
    first = {g.finding_type.value for g in groups(reread(build_sr(report, report.models[0])))}
    second = {g.finding_type.value for g in groups(reread(build_sr(report, other)))}
    assert first == {f.code for f in report.findings_of(report.models[0].name,
                                                        report.models[0].version)}
    assert second == {"72704001"}


def test_the_engine_recognises_the_sr_as_its_own_output(report: AIReport) -> None:
    data = sr_part10(build_sr(report, report.models[0]))
    meta = read_meta(data)
    assert meta.own_output is True
    assert meta.sop_class_uid == COMPREHENSIVE_3D_SR
    assert meta.study_uid == report.study_uid


def test_a_source_file_gone_still_builds_from_the_report(report: AIReport) -> None:
    Path(report.instances[0].path).unlink()
    sr = build_sr(report, report.models[0])
    assert report.patient is not None
    assert sr.PatientID == report.patient.patient_id
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == report.instances[0].sop_uid


def test_a_report_without_source_instances_is_refused(report: AIReport) -> None:
    report.instances.clear()
    with pytest.raises(ValueError, match="source instances"):
        build_sr(report, report.models[0])
