"""The radiologist's ORU^R01 from the RIS, read leniently for agreement with the AI findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.hl7v2.final_report import Code, read_final_report
from mappings.hl7v2.orders import MappingError
from mappings.hl7v2.oru import build_oru
from tests.fixtures.reports import sample_report

ACCESSION, PLACER, FILLER, PATIENT = "ACC900", "PL900", "FI900", "MRN900"
NARRATIVE = ["FINDINGS:", "Small right apical pneumothorax, 2 \\T\\ 3 mm\\.br\\rim.", "",
             "IMPRESSION: Pneumothorax."]


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with *fields* placed by number (so each value lands where the test says)."""
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join([name, *values])


def final_oru(*, terminator: str = "\r", status: str = "F", obr18: str = ACCESSION,
              kind: str = "ORU^R01", extra: tuple[str, ...] = ()) -> bytes:
    segments = [
        "MSH|^~\\&|RIS|SITE|RADBRIDGE|SITE|20260101120000||" + kind + "|RIS77|P|2.3.1",
        "ZPI|site specific|before PID",
        seg("PID", {1: "1", 3: f"{PATIENT}^^^HOSP^MR", 5: "DOE^JANE"}),
        seg("ORC", {1: "RE", 2: PLACER, 3: FILLER}),
        seg("OBR", {1: "1", 2: PLACER, 3: FILLER, 4: "71046^XR CHEST^CPT", 18: obr18,
                    25: status}),
        seg("OBX", {1: "1", 2: "FT", 3: "18782-3^Radiology Study observation^LN",
                    5: "~".join(NARRATIVE), 11: status}),
        "ZRS|1|between OBX",
        seg("OBX", {1: "2", 2: "CWE", 3: "59776-5^Procedure findings^LN",
                    5: "36118008^Pneumothorax^SCT~RID5352^pneumothorax^RADLEX", 11: status}),
        seg("OBX", {1: "3", 2: "TX", 3: "19005-8^Impression^LN",
                    5: "Radiologist agrees with \\F\\AI\\F\\ flag.", 11: status}),
        *extra,
    ]
    return terminator.join(segments).encode("latin-1")


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_a_final_report_is_read_whatever_the_segment_terminator(terminator: str) -> None:
    final = read_final_report(final_oru(terminator=terminator))
    assert (final.accession, final.placer, final.filler) == (ACCESSION, PLACER, FILLER)
    assert (final.patient_id, final.status, final.control_id) == (PATIENT, "F", "RIS77")
    assert Code("36118008", "SCT", "Pneumothorax") in final.codes
    assert Code("RID5352", "RADLEX", "pneumothorax") in final.codes
    assert [c.code for c in final.codes] == ["18782-3", "59776-5", "36118008", "RID5352",
                                             "19005-8"]
    assert final.text.splitlines() == [
        "FINDINGS:", "Small right apical pneumothorax, 2 & 3 mm", "rim.", "",
        "IMPRESSION: Pneumothorax.", "Radiologist agrees with |AI| flag."]


def test_a_code_sent_twice_is_listed_once() -> None:
    again = seg("OBX", {1: "4", 2: "CE", 3: "59776-5^Procedure findings^LN",
                        5: "36118008^Pneumothorax^SCT", 11: "F"})
    codes = read_final_report(final_oru(extra=(again,))).codes
    assert [c.code for c in codes].count("36118008") == 1


def test_the_accession_falls_back_to_obr3_and_numbers_to_the_orc() -> None:
    raw = final_oru(obr18="").replace(f"OBR|1|{PLACER}|{FILLER}|".encode(), b"OBR|1|||")
    final = read_final_report(raw)
    assert (final.placer, final.filler) == (PLACER, FILLER)  # from ORC-2 / ORC-3
    assert final.accession is None  # OBR-18 and OBR-3 both empty
    final = read_final_report(final_oru(obr18=""))
    assert final.accession == FILLER


def test_a_preliminary_report_says_so() -> None:
    assert read_final_report(final_oru(status="p")).status == "P"


def test_a_report_in_mllp_framing_and_an_odd_charset_is_read() -> None:
    raw = b"\x0b" + final_oru().replace(b"|P|2.3.1", b"|P|2.3.1||||||8859/1") + b"\x1c\r"
    raw = raw.replace(b"DOE^JANE", "MÜLLER^JANE".encode("latin-1"))
    assert read_final_report(raw).accession == ACCESSION


@pytest.mark.parametrize(("raw", "location"), [
    (final_oru(kind="ORM^O01"), "MSH-9"),
    (final_oru(kind="ADT^A08"), "MSH-9"),
    (b"this is not HL7", "MSH"),
])
def test_anything_but_an_oru_is_refused_naming_the_field(raw: bytes, location: str) -> None:
    with pytest.raises(MappingError) as err:
        read_final_report(raw)
    assert err.value.location == location


def test_an_oru_without_obr_is_refused() -> None:
    raw = b"\r".join(line for line in final_oru().split(b"\r") if not line.startswith(b"OBR"))
    with pytest.raises(MappingError) as err:
        read_final_report(raw)
    assert err.value.location == "OBR"


def test_an_oru_that_names_no_order_is_refused() -> None:
    raw = final_oru(obr18="").replace(f"{PLACER}|{FILLER}".encode(), b"|")
    with pytest.raises(MappingError) as err:
        read_final_report(raw)
    assert err.value.location == "OBR-18"


@pytest.mark.parametrize("version", ["2.5.1", "2.3.1"])
def test_our_own_oru_reads_back_with_every_ai_finding_code(tmp_path: Path, version: str) -> None:
    report = sample_report(tmp_path)
    final = read_final_report(build_oru(report, version=version))
    assert report.order is not None
    assert (final.accession, final.placer, final.filler, final.status) == (
        report.accession, report.order.placer, report.order.filler, "P")
    for finding in report.findings:
        assert Code(finding.code, finding.coding_system, finding.display) in final.codes
    assert "Location: Right lung" in final.text
