"""The FHIR transaction Bundle of an AI report: valid, derived from the report, deterministic."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from engine.results.model import AIReport
from radbridge_fhir.bundle import build_bundle
from radbridge_fhir.ids import key_uuid, resource_id, storable
from radbridge_fhir.validate import FhirInvalid, validate_bundle
from tests.fixtures.reports import ACCESSION, PATIENT_ID, sample_report

AIAST = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
         "code": "AIAST", "display": "Artificial Intelligence asserted"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _of(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def _one(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    (found,) = _of(bundle, rtype)
    return found


def test_the_sample_report_bundle_is_a_valid_transaction(tmp_path: Path) -> None:
    bundle = build_bundle(sample_report(tmp_path))
    validate_bundle(bundle)  # raises on any fault
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Patient", "ImagingStudy", "Device", "Device", "Observation",
                     "Observation", "DiagnosticReport", "Provenance"]


def test_the_same_report_gives_the_same_bundle(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    again = AIReport.from_json(report.to_json())
    first = json.dumps(build_bundle(report), sort_keys=True)
    assert first == json.dumps(build_bundle(again), sort_keys=True)
    other = dataclasses.replace(report, revision=2)
    assert json.dumps(build_bundle(other), sort_keys=True) != first


def test_every_entry_is_a_conditional_create_on_its_key_with_a_derived_full_url(
        tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    for entry in build_bundle(report)["entry"]:
        res, req = entry["resource"], entry["request"]
        assert req["method"] == "POST" and req["url"] == res["resourceType"]
        if res.get("identifier"):
            ident = res["identifier"][0]
            assert req["ifNoneExist"] == f"identifier={ident['system']}|{ident['value']}"
        else:  # Provenance has no identifier in R4: its tag is the key
            tag = res["meta"]["tag"][0]
            assert req["ifNoneExist"] == f"_tag={tag['system']}|{tag['code']}"
            assert tag["code"] == f"{report.report_id}-provenance"
        assert entry["fullUrl"] == f"urn:uuid:{resource_id(res)}"


def test_patient_and_study_come_from_the_report(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    bundle = build_bundle(report)
    patient = _one(bundle, "Patient")["resource"]
    assert patient["identifier"][0]["value"] == PATIENT_ID
    assert patient["identifier"][0]["system"] == "urn:radbridge:issuer:HOSP"
    assert patient["birthDate"] == "1970-01-01" and patient["gender"] == "female"
    study = _one(bundle, "ImagingStudy")["resource"]
    assert study["identifier"][0] == {"system": "urn:dicom:uid",
                                      "value": f"urn:oid:{report.study_uid}"}
    assert study["identifier"][1]["value"] == ACCESSION
    assert study["status"] == "available"
    assert study["subject"]["reference"] == _one(bundle, "Patient")["fullUrl"]
    (series,) = study["series"]
    (inst,) = report.instances
    assert series["uid"] == inst.series_uid and series["modality"]["code"] == "CR"
    assert series["instance"][0]["uid"] == inst.sop_uid
    assert series["instance"][0]["sopClass"] == {"system": "urn:ietf:rfc:3986",
                                                 "code": f"urn:oid:{inst.sop_class_uid}"}


def test_each_finding_is_a_preliminary_ai_observation_pointing_at_device_and_study(
        tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    bundle = build_bundle(report)
    urls = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle["entry"]}
    model_device = _of(bundle, "Device")[1]
    assert model_device["resource"]["deviceName"][0]["name"] == "cxr-triage"
    assert model_device["resource"]["version"][0]["value"] == "1.2.0"
    observations = [e["resource"] for e in _of(bundle, "Observation")]
    assert len(observations) == len(report.findings)
    for obs, finding in zip(observations, report.findings, strict=True):
        assert obs["status"] == "preliminary"
        assert obs["category"][0]["coding"][0]["code"] == "imaging"
        assert obs["code"]["coding"][0] == {"system": "http://snomed.info/sct",
                                            "code": finding.code, "display": finding.display}
        assert obs["valueQuantity"] == {"value": finding.probability, "unit": "1",
                                        "system": "http://unitsofmeasure.org", "code": "1"}
        want = "AA" if finding.critical else "A"
        assert obs["interpretation"][0]["coding"][0] == {
            "system": INTERPRETATION, "code": want,
            "display": "Critical abnormal" if finding.critical else "Abnormal"}
        assert obs["device"]["reference"] == model_device["fullUrl"]
        assert obs["derivedFrom"] == [{"reference": urls["ImagingStudy"]}]
        assert obs["subject"] == {"reference": urls["Patient"]}
        assert obs["meta"]["security"] == [AIAST]
        assert obs["issued"] == "2026-11-18T11:06:42+00:00"
    assert observations[0]["bodySite"] == {"text": "Right lung"}
    assert "bodySite" not in observations[1]


def test_the_diagnostic_report_carries_order_results_and_disclaimer(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    bundle = build_bundle(report)
    entry = _one(bundle, "DiagnosticReport")
    dr = entry["resource"]
    assert dr["status"] == "preliminary" and dr["meta"]["security"] == [AIAST]
    assert dr["identifier"] == [{"system": "urn:radbridge:report", "value": report.report_id}]
    assert {c["code"] for c in dr["category"][0]["coding"]} == {"LP29684-5", "RAD"}
    assert dr["code"]["coding"][0] == {"system": "http://www.ama-assn.org/go/cpt",
                                       "code": "71046", "display": "XR CHEST 2 VIEWS"}
    assert dr["result"] == [{"reference": e["fullUrl"]} for e in _of(bundle, "Observation")]
    assert dr["imagingStudy"] == [{"reference": _one(bundle, "ImagingStudy")["fullUrl"]}]
    assert dr["basedOn"][0]["identifier"]["value"] == "PL4711"
    assert dr["conclusion"].startswith("AI-generated preliminary result")
    assert "DEMO" not in dr["conclusion"]
    assert [c["coding"][0]["code"] for c in dr["conclusionCode"]] == ["36118008", "60046008"]
    prov = _one(bundle, "Provenance")["resource"]
    targets = [t["reference"] for t in prov["target"]]
    assert targets == [entry["fullUrl"]] + [e["fullUrl"] for e in _of(bundle, "Observation")]
    agents = {a["type"]["coding"][0]["code"]: a["who"]["reference"] for a in prov["agent"]}
    assert agents["performer"] == _of(bundle, "Device")[1]["fullUrl"]
    assert agents["assembler"] == _of(bundle, "Device")[0]["fullUrl"]


def test_a_demo_report_says_so_in_the_report_and_on_the_device(tmp_path: Path) -> None:
    bundle = build_bundle(sample_report(tmp_path, demo=True))
    assert "DEMO" in _one(bundle, "DiagnosticReport")["resource"]["conclusion"]
    device = _of(bundle, "Device")[1]["resource"]
    assert "DEMO" in device["note"][0]["text"]
    assert device["property"][0]["type"]["coding"][0]["code"] == "DEMO"


def test_a_model_without_findings_gives_a_not_detected_observation(tmp_path: Path) -> None:
    report = sample_report(tmp_path, findings=False, with_order=False)
    bundle = build_bundle(report)
    (obs,) = [e["resource"] for e in _of(bundle, "Observation")]
    assert obs["code"]["coding"][0]["code"] == "NOFINDING"
    assert obs["interpretation"][0]["coding"][0]["code"] == "ND"
    assert "valueQuantity" not in obs
    dr = _one(bundle, "DiagnosticReport")["resource"]
    assert dr["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4",
                                       "display": "Diagnostic imaging study"}
    assert "conclusionCode" not in dr and "basedOn" not in dr
    assert "No finding detected by AI model cxr-triage 1.2.0" in dr["conclusion"]


def test_finding_systems_map_to_fhir_uris(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    for finding, system in zip(report.findings, ("LN", "RADLEX"), strict=True):
        finding.coding_system = system
    report.findings.append(dataclasses.replace(report.findings[0], coding_system="99RADBRIDGE",
                                               code="X1"))
    codes = [e["resource"]["code"]["coding"][0]["system"]
             for e in _of(build_bundle(report), "Observation")]
    assert codes == ["http://loinc.org", "http://radlex.org", "urn:radbridge:codes"]


def test_a_report_without_a_patient_is_refused(tmp_path: Path) -> None:
    report = dataclasses.replace(sample_report(tmp_path), patient=None)
    with pytest.raises(FhirInvalid) as err:
        build_bundle(report)
    assert err.value.resource == "Patient"


def test_an_invalid_value_names_the_resource_and_element(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    report.findings[1].probability = float("nan")
    with pytest.raises(FhirInvalid) as err:
        build_bundle(report)
    assert err.value.resource is not None and err.value.resource.startswith("Observation[2]")
    assert err.value.element == "valueQuantity.value"


def test_a_dangling_reference_is_refused(tmp_path: Path) -> None:
    bundle = build_bundle(sample_report(tmp_path))
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    with pytest.raises(FhirInvalid, match="resolves to no entry"):
        validate_bundle(bundle)


def test_storable_resources_get_their_ids_and_resolved_references(tmp_path: Path) -> None:
    bundle = build_bundle(sample_report(tmp_path))
    stored = storable([e["resource"] for e in bundle["entry"]])
    ids = {s["resourceType"] + "/" + s["id"] for s in stored}
    for entry, res in zip(bundle["entry"], stored, strict=True):
        assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
        assert "id" not in entry["resource"]  # the bundle itself is untouched
    dr = next(s for s in stored if s["resourceType"] == "DiagnosticReport")
    assert {r["reference"] for r in dr["result"]} <= ids
    patient = stored[0]
    ident = patient["identifier"][0]
    assert patient["id"] == key_uuid(ident["system"], ident["value"])
    assert dr["subject"]["reference"] == f"Patient/{patient['id']}"
