"""AI report -> ORU^R01: every built message is read back with python-hl7 and checked against
the report it came from, and validated by hl7apy independently of the builder."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from engine.model import Finding
from engine.results.model import AIReport, ModelRun
from mappings.hl7v2.oru import OutboundInvalid, build_oru
from tests.fixtures.reports import sample_report

VERSIONS = ["2.5.1", "2.3.1"]


def parse(raw: bytes) -> hl7.Message:
    assert b"\n" not in raw, "segments must be separated by \\r only"
    return hl7.parse(raw.decode("utf-8"))


def fld(seg: hl7.Segment, n: int) -> str:
    """Field *n* of *seg* as sent (escaped), "" when absent."""
    return str(seg(n)) if len(seg) > n else ""


def comps(seg: hl7.Segment, n: int) -> list[str]:
    return fld(seg, n).split("^")


def hl7_ts(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def obx_segments(msg: hl7.Message) -> list[hl7.Segment]:
    return list(msg.segments("OBX"))


def hl7apy_validates(raw: bytes) -> bool:
    message = parse_message(raw.decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT,
                            find_groups=True)
    return bool(message.validate())


@pytest.fixture
def report(tmp_path: Path) -> AIReport:
    return sample_report(tmp_path)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_oru_carries_the_header_patient_and_order_of_the_report(report: AIReport,
                                                                     version: str) -> None:
    msg = parse(build_oru(report, version=version, receiving_application="EHR",
                          receiving_facility="HOSP"))
    msh, pid = msg.segment("MSH"), msg.segment("PID")
    assert [fld(msh, n) for n in (3, 4, 5, 6)] == ["RADBRIDGE", "RADBRIDGE", "EHR", "HOSP"]
    assert fld(msh, 7) == hl7_ts(report.reported_at)
    assert fld(msh, 9) == ("ORU^R01^ORU_R01" if version == "2.5.1" else "ORU^R01")
    assert fld(msh, 10) == report.report_id + "-ORU"
    assert (fld(msh, 11), fld(msh, 12)) == ("P", version)
    patient = report.patient
    assert patient is not None
    assert comps(pid, 3)[0] == patient.patient_id and comps(pid, 3)[3] == patient.issuer
    assert comps(pid, 5)[:2] == [patient.family, patient.given]
    assert (fld(pid, 7), fld(pid, 8)) == (patient.birth_date, patient.sex)
    order = report.order
    assert order is not None
    orc, obr = msg.segment("ORC"), msg.segment("OBR")
    assert [fld(orc, n) for n in (1, 2, 3)] == ["RE", order.placer, order.filler]
    assert [fld(obr, n) for n in (2, 3)] == [order.placer, order.filler]
    assert comps(obr, 4) == [order.procedure_code, order.procedure_text, order.procedure_system]
    assert report.study_completed_at is not None
    assert fld(obr, 7) == hl7_ts(report.study_completed_at)
    assert (fld(obr, 18), fld(obr, 19)) == (report.accession, order.requested_procedure_id)
    assert fld(obr, 22) == hl7_ts(report.reported_at)
    assert fld(obr, 24) == "RX"  # CR: radiograph, HL7 table 0074
    assert fld(obr, 25) == "P"


@pytest.mark.parametrize("version", VERSIONS)
def test_each_finding_is_an_obx_group_with_code_probability_and_note(report: AIReport,
                                                                     version: str) -> None:
    obxs = obx_segments(parse(build_oru(report, version=version)))
    assert [fld(o, 1) for o in obxs] == [str(n) for n in range(1, len(obxs) + 1)]
    for sub_id, finding in enumerate(report.findings, start=1):
        group = {fld(o, 2): o for o in obxs if fld(o, 4) == str(sub_id)}
        coded = group["CWE" if version == "2.5.1" else "CE"]
        assert comps(coded, 5) == [finding.code, finding.display, finding.coding_system]
        assert float(fld(coded, 9)) == pytest.approx(finding.probability)
        assert fld(coded, 8) == "A"
        number = group["NM"]
        assert float(fld(number, 5)) == pytest.approx(finding.probability)
        assert fld(number, 6) == "1^^UCUM" and fld(number, 7) == "0-1"
        if finding.location:
            assert finding.location in fld(group["TX"], 5)
        else:
            assert "TX" not in group
    assert {fld(o, 4) for o in obxs} == {str(n) for n in range(1, len(report.findings) + 1)}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_obx_is_preliminary_timed_and_names_the_ai_method_and_model(
        report: AIReport, version: str) -> None:
    model = report.models[0]
    for obx in obx_segments(parse(build_oru(report, version=version))):
        assert fld(obx, 11) == "P"
        assert fld(obx, 14) == hl7_ts(report.reported_at)
        methods = fld(obx, 17).split("~")
        assert methods[0] == "AI^Artificial intelligence algorithm^99RADBRIDGE"
        if version == "2.5.1":
            assert fld(obx, 18) == f"{model.name}:{model.version}"
        else:  # no OBX-18 before v2.4: the model is a second OBX-17 repetition
            assert len(obx) <= 18
            assert methods[1].split("^")[0] == f"{model.name}:{model.version}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("findings", [True, False])
def test_hl7apy_validates_the_oru_strictly(tmp_path: Path, version: str, findings: bool) -> None:
    raw = build_oru(sample_report(tmp_path, findings=findings), version=version)
    assert hl7apy_validates(raw)


def test_delimiters_in_a_finding_display_are_escaped(report: AIReport) -> None:
    display = "Pneumo|thorax ^ tension~left & right \\ apex\r\nsmall"
    report.findings[0].display = display
    raw = build_oru(report)
    msg = parse(raw)
    assert len(msg) == len(parse(build_oru(sample_report_copy(report, display="x"))))
    coded = obx_segments(msg)[0]
    sent = comps(coded, 5)
    assert len(sent) == 3 and sent[2] == "SCT"
    assert "\\F\\" in sent[1] and "\\S\\" in sent[1] and "\\R\\" in sent[1]
    assert "\\T\\" in sent[1] and "\\E\\" in sent[1]
    assert msg.unescape(sent[1]) == display.replace("\r", " ").replace("\n", " ")
    assert hl7apy_validates(raw)


def sample_report_copy(report: AIReport, *, display: str) -> AIReport:
    copy = AIReport.from_json(report.to_json())
    copy.findings[0].display = display
    return copy


@pytest.mark.parametrize("demo", [True, False])
def test_the_demo_warning_is_sent_if_and_only_if_the_report_is_a_demo(tmp_path: Path,
                                                                      demo: bool) -> None:
    report = sample_report(tmp_path, demo=demo)
    notes = [fld(n, 3) for n in parse(build_oru(report)).segments("NTE")]
    assert any("AI-generated preliminary result for a second read" in n for n in notes)
    assert any("DEMO" in n and "not a clinical finding" in n for n in notes) is demo
    assert report.demo is demo


def test_a_model_with_no_finding_sends_one_coded_negative(tmp_path: Path) -> None:
    report = sample_report(tmp_path, findings=False)
    obxs = obx_segments(parse(build_oru(report)))
    assert len(obxs) == len(report.models) == 1
    negative = obxs[0]
    assert comps(negative, 3) == ["121071", "Finding", "DCM"]
    assert comps(negative, 5)[0] == "NOFINDING" and comps(negative, 5)[2] == "99RADBRIDGE"
    assert (fld(negative, 8), fld(negative, 11)) == ("N", "P")
    assert fld(negative, 18) == f"{report.models[0].name}:{report.models[0].version}"


def test_a_failed_model_is_noted_and_not_reported_negative(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    report.models.append(ModelRun(name="fracture", version="0.3", state="error"))
    report.models.append(ModelRun(name="quiet", version="2.0", mode="shadow"))
    msg = parse(build_oru(report))
    assert any("fracture 0.3" in fld(n, 3) for n in msg.segments("NTE"))
    assert not any("fracture" in fld(o, 18) or "quiet" in fld(o, 18) for o in obx_segments(msg))


def test_a_report_without_a_patient_is_refused(report: AIReport) -> None:
    report.patient = None
    with pytest.raises(OutboundInvalid) as err:
        build_oru(report)
    assert err.value.location == "PID"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_report_without_an_order_names_the_study_by_accession(tmp_path: Path,
                                                                version: str) -> None:
    report = sample_report(tmp_path, with_order=False)
    raw = build_oru(report, version=version)
    msg = parse(raw)
    orc, obr = msg.segment("ORC"), msg.segment("OBR")
    assert fld(orc, 1) == "RE" and fld(orc, 2) == fld(orc, 3) == ""
    assert fld(obr, 18) == report.accession
    assert comps(obr, 4) == ["18748-4", "Diagnostic imaging study", "LN"]
    assert hl7apy_validates(raw)


def test_the_same_report_gives_the_same_bytes(tmp_path: Path, report: AIReport) -> None:
    again = AIReport.from_json(report.to_json())
    assert build_oru(again) == build_oru(report)
    again.revision += 1
    assert fld(parse(build_oru(again)).segment("MSH"), 10) == again.report_id + "-ORU"
    assert again.report_id != report.report_id


@pytest.mark.parametrize(("designator", "hl7_name"), [
    ("SCT", "SCT"), ("SRT", "SCT"), ("LN", "LN"), ("RADLEX", "RADLEX"),
    ("99RADBRIDGE", "99RADBRIDGE"), ("DCM", "DCM")])
def test_dicom_coding_schemes_become_hl7_coding_systems(report: AIReport, designator: str,
                                                         hl7_name: str) -> None:
    report.findings[0].coding_system = designator
    coded = obx_segments(parse(build_oru(report)))[0]
    assert comps(coded, 5)[2] == hl7_name


def test_an_invalid_value_is_refused_naming_the_field_without_quoting_it(
        report: AIReport) -> None:
    assert report.patient is not None
    report.patient.family = "SURNAME" * 40  # beyond the 199 characters of XPN.1
    with pytest.raises(OutboundInvalid) as err:
        build_oru(report)
    assert err.value.location == "PID-5"
    assert "PID-5" in str(err.value) and "SURNAME" not in str(err.value)


def test_a_sending_application_too_long_for_msh3_is_refused_naming_it(
        report: AIReport) -> None:
    with pytest.raises(OutboundInvalid) as err:
        build_oru(report, sending_application="RADIOLOGY-AI-RESULTS-GATEWAY")
    assert err.value.location == "MSH-3"


def test_a_wide_character_is_sent_as_utf8_and_declared(report: AIReport) -> None:
    assert report.patient is not None
    report.patient.family = "MÜLLER-ŁUKASZ"
    raw = build_oru(report)
    msg = parse(raw)
    assert fld(msg.segment("MSH"), 18) == "UNICODE UTF-8"
    assert comps(msg.segment("PID"), 5)[0] == report.patient.family
    assert hl7apy_validates(raw)


def test_an_oid_issuer_goes_to_the_universal_id(report: AIReport) -> None:
    assert report.patient is not None
    report.patient.issuer = "1.2.840.113619.6.1234567"
    pid3 = comps(parse(build_oru(report)).segment("PID"), 3)
    assert pid3[3] == f"&{report.patient.issuer}&ISO"


def test_a_finding_without_probability_has_no_number(report: AIReport) -> None:
    report.findings = [Finding(code="RID5352", display="pneumothorax", coding_system="RADLEX",
                               probability=None, critical=False, model_name="cxr-triage",
                               model_version="1.2.0", detail="area 12 cm2")]
    obxs = obx_segments(parse(build_oru(report)))
    assert [fld(o, 2) for o in obxs] == ["CWE", "TX"]
    assert fld(obxs[1], 5) == "Detail: area 12 cm2"


def test_an_unknown_version_is_refused(report: AIReport) -> None:
    with pytest.raises(OutboundInvalid):
        build_oru(report, version="2.7")
