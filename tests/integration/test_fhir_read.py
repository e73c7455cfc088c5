"""The read-only FHIR side: the store keeps a report's resources, /fhir serves them.

The store part runs on a real SQLiteStore; the API part through a real admin
server on loopback with the suite's users and tokens (tests/e2e/support.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from engine.store.sqlite import SQLiteStore
from radbridge_fhir.bundle import build_bundle
from radbridge_fhir.ids import resource_id, storable
from tests.e2e.support import Started, admin_engine
from tests.fixtures.reports import PATIENT_ID, sample_report

__all__ = ["admin_engine"]  # the fixture, imported for pytest


def _resources(tmp_path: Path, **kw: Any) -> list[dict[str, Any]]:
    """A report's resources as the ``fhir`` payload hands them to the store (``storable``)."""
    return storable([e["resource"] for e in build_bundle(sample_report(tmp_path, **kw))["entry"]])


def _id_of(resources: list[dict[str, Any]], rtype: str) -> str:
    return resource_id(next(r for r in resources if r["resourceType"] == rtype))


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "radbridge.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_saved_resources_are_read_back_by_id_with_server_references(
        store: SQLiteStore, tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    await store.save_fhir_resources(17, resources)
    patient_id = _id_of(resources, "Patient")
    dr_id = _id_of(resources, "DiagnosticReport")
    (dr,) = await store.search_fhir("DiagnosticReport", resource_id=dr_id)
    assert dr["id"] == dr_id and dr["subject"] == {"reference": f"Patient/{patient_id}"}
    assert dr["meta"]["security"][0]["code"] == "AIAST" and dr["meta"]["lastUpdated"]
    for ref in dr["result"]:
        rtype, rid = ref["reference"].split("/")
        (obs,) = await store.search_fhir(rtype, resource_id=rid)
        assert obs["resourceType"] == "Observation"
    assert await store.search_fhir("DiagnosticReport", resource_id="nope") == []
    assert await store.search_fhir("Observation", resource_id=dr_id) == []


async def test_saving_the_same_report_twice_replaces_instead_of_adding(
        store: SQLiteStore, tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    await store.save_fhir_resources(17, resources)
    await store.save_fhir_resources(17, resources)
    assert len(await store.search_fhir("Observation")) == 2
    assert len(await store.search_fhir("Patient")) == 1
    assert len(await store.search_fhir("Observation", patient=PATIENT_ID)) == 2


async def test_search_by_patient_reference_id_or_identifier(store: SQLiteStore,
                                                            tmp_path: Path) -> None:
    mine = _resources(tmp_path / "a")
    report = sample_report(tmp_path / "b")
    assert report.patient is not None
    someone = dataclasses.replace(report, case_id=18, patient=dataclasses.replace(
        report.patient, patient_id="SOMEONE-ELSE"))
    other = [e["resource"] for e in build_bundle(someone)["entry"]]
    await store.save_fhir_resources(1, mine)
    await store.save_fhir_resources(2, storable([r for r in other
                                                 if r["resourceType"] != "Device"]))
    pid = _id_of(mine, "Patient")
    for query in (f"Patient/{pid}", pid, PATIENT_ID, f"urn:radbridge:issuer:HOSP|{PATIENT_ID}"):
        found = await store.search_fhir("DiagnosticReport", patient=query)
        assert [r["id"] for r in found] == [_id_of(mine, "DiagnosticReport")], query
    assert await store.search_fhir("DiagnosticReport", patient=f"other|{PATIENT_ID}") == []
    assert len(await store.search_fhir("Observation", patient="SOMEONE-ELSE")) == 2
    (prov,) = await store.search_fhir("Provenance", patient=PATIENT_ID)
    assert prov["target"][0]["reference"].startswith("DiagnosticReport/")
    assert len(await store.search_fhir("Observation", patient=PATIENT_ID, limit=1)) == 1


async def test_search_by_identifier_token_or_value(store: SQLiteStore, tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    resources = storable([e["resource"] for e in build_bundle(report)["entry"]])
    await store.save_fhir_resources(17, resources)
    rid = report.report_id
    for token in (f"urn:radbridge:report|{rid}", rid):
        (dr,) = await store.search_fhir("DiagnosticReport", identifier=token)
        assert dr["identifier"][0]["value"] == rid
    assert await store.search_fhir("DiagnosticReport", identifier=f"urn:other|{rid}") == []
    assert len(await store.search_fhir("Observation", identifier="urn:radbridge:report|")) == 2
    (study,) = await store.search_fhir("ImagingStudy",
                                       identifier=f"urn:dicom:uid|urn:oid:{report.study_uid}")
    assert study["series"][0]["instance"][0]["uid"] == report.instances[0].sop_uid


async def test_a_resource_without_an_id_is_refused_and_nothing_is_saved(
        store: SQLiteStore, tmp_path: Path) -> None:
    keyed = _resources(tmp_path)
    bare = {"resourceType": "Observation", "status": "final"}
    with pytest.raises(ValueError, match="Observation has no id"):
        await store.save_fhir_resources(17, [*keyed, bare])
    assert await store.search_fhir("Patient") == []


# -- /fhir through the admin server --------------------------------------------------------

async def _seeded(admin_engine: Started, tmp_path: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    engine, api = await admin_engine()
    resources = _resources(tmp_path / "report")
    await engine.store.save_fhir_resources(17, resources)
    return engine, api, resources


async def test_metadata_is_an_r4_capability_statement(admin_engine: Started,
                                                      tmp_path: Path) -> None:
    _, api = await admin_engine()
    status, body = await api.call("GET", "/fhir/metadata", "radiologist")
    assert status == 200
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1"
    served = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert {"DiagnosticReport", "Observation", "ImagingStudy", "Device", "Provenance"} <= set(
        served)
    assert [i["code"] for i in served["Observation"]["interaction"]] == ["read", "search-type"]


async def test_read_and_search_answer_fhir_json(admin_engine: Started, tmp_path: Path) -> None:
    engine, api, resources = await _seeded(admin_engine, tmp_path)
    dr_id = _id_of(resources, "DiagnosticReport")
    async with api.http.get(f"{api.base}/fhir/DiagnosticReport/{dr_id}",
                            headers={"Authorization": "Bearer rbt_test-token-for-the-admin-role"}
                            ) as resp:
        assert resp.status == 200 and resp.content_type == "application/fhir+json"
        dr = json.loads(await resp.read())
    assert dr["id"] == dr_id and dr["status"] == "preliminary"
    status, bundle = await api.call("GET", f"/fhir/Observation?patient={PATIENT_ID}", "analyst")
    assert status == 200
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == 2
    assert {e["resource"]["id"] for e in bundle["entry"]} == {
        r["reference"].split("/")[1] for r in dr["result"]}
    assert all(e["fullUrl"].endswith(f"/fhir/Observation/{e['resource']['id']}")
               for e in bundle["entry"])
    status, bundle = await api.call(
        "GET", f"/fhir/DiagnosticReport?subject={dr['subject']['reference']}", "radiologist")
    assert status == 200 and [e["resource"]["id"] for e in bundle["entry"]] == [dr_id]
    token = f"urn:radbridge:report|{dr['identifier'][0]['value']}"
    status, bundle = await api.call("GET", f"/fhir/DiagnosticReport?identifier={token}",
                                    "radiologist")
    assert status == 200 and bundle["total"] == 1
    (latest,) = await engine.admin.state.audit.query(limit=1)
    assert latest.action == "fhir.search" and latest.user == "radiologist-token"
    assert PATIENT_ID not in json.dumps(latest.detail)  # parameter names, never values


async def test_unknown_ids_types_and_parameters_answer_operation_outcomes(
        admin_engine: Started, tmp_path: Path) -> None:
    _, api, _ = await _seeded(admin_engine, tmp_path)
    for path, want, code in (
            ("/fhir/DiagnosticReport/0000", 404, "not-found"),
            ("/fhir/Medication/1", 404, "not-supported"),
            ("/fhir/Medication?patient=x", 404, "not-supported"),
            ("/fhir/Observation?date=2026", 400, "not-supported"),
            ("/fhir/Observation?_count=0", 400, "not-supported"),
            ("/fhir/Observation?_format=xml", 400, "not-supported"),
            ("/fhir/Observation?subject=Group/1", 400, "not-supported")):
        status, body = await api.call("GET", path, "admin")
        assert status == want, path
        assert body["resourceType"] == "OperationOutcome", path
        assert body["issue"][0]["code"] == code, path


@pytest.mark.parametrize("caller,want", [("viewer", 403), (None, 401), ("radiologist", 200)])
async def test_only_roles_that_see_phi_may_read_fhir(admin_engine: Started, tmp_path: Path,
                                                     caller: str | None, want: int) -> None:
    _, api, resources = await _seeded(admin_engine, tmp_path)
    dr_id = _id_of(resources, "DiagnosticReport")
    for path in ("/fhir/metadata", f"/fhir/DiagnosticReport/{dr_id}",
                 f"/fhir/Observation?patient={PATIENT_ID}"):
        status, _ = await api.call("GET", path, caller)
        assert status == want, path
