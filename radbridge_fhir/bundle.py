"""An AIReport -> one FHIR R4 transaction Bundle, validated before it is returned.

Entries, in this order: Patient, ImagingStudy, the radbridge Device and one
Device per model, one Observation per finding and one "no finding"
Observation per model that ran and found nothing, the DiagnosticReport, the
Provenance. Each entry is ``POST`` with ``ifNoneExist`` on its business key
and a ``urn:uuid:`` fullUrl derived from that key (``radbridge_fhir.ids``):
the same report gives the same Bundle, and a second POST of it creates
nothing new on a server that honours conditional create.
"""

from __future__ import annotations

from typing import Any

from engine.results.model import AIReport
from radbridge_fhir import resources as r
from radbridge_fhir.ids import token_query
from radbridge_fhir.validate import FhirInvalid, validate_bundle

DEFAULT_SYSTEM = "urn:radbridge:report"


def entry(resource: dict[str, Any]) -> dict[str, Any]:
    """A transaction entry: POST, conditional on the identifier (or, for Provenance, the tag)."""
    rtype = resource["resourceType"]
    ident = resource.get("identifier") or []
    if ident:
        query = token_query("identifier", ident[0]["system"], ident[0]["value"])
    else:
        tag = resource["meta"]["tag"][0]
        query = token_query("_tag", tag["system"], tag["code"])
    return {"fullUrl": r.url_of(resource), "resource": resource,
            "request": {"method": "POST", "url": rtype, "ifNoneExist": query}}


def build_bundle(report: AIReport, *, identifier_system: str = DEFAULT_SYSTEM
                 ) -> dict[str, Any]:
    """The transaction Bundle of *report* as a JSON-ready dict.

    Raises FhirInvalid when the report has no patient (ImagingStudy.subject is required, and
    no EHR can file a result without one) or when any resource fails R4B validation.
    """
    if report.patient is None or not report.patient.patient_id:
        raise FhirInvalid("the report has no patient: no EHR can file a result without one",
                          "Patient")
    system = identifier_system
    patient = r.patient(report.patient)
    procedure = r.procedure_code(report)
    study = r.imaging_study(report, patient, procedure)
    engine = r.engine_device()
    models = r.sent_models(report)
    devices = {(m.name, m.version): r.model_device(m) for m in models}
    observations: list[dict[str, Any]] = []
    for n, finding in enumerate(report.findings, start=1):
        device = devices.get((finding.model_name, finding.model_version))
        if device is None:  # a finding of a model the report does not list: still attributed
            from engine.results.model import ModelRun

            run = ModelRun(finding.model_name, finding.model_version, demo=finding.demo)
            device = devices[(run.name, run.version)] = r.model_device(run)
        observations.append(r.finding_observation(
            report, finding, f"{report.report_id}-obs{n}", system, patient, study, device))
    for m in models:
        if m.state == "done" and not report.findings_of(m.name, m.version):
            observations.append(r.no_finding_observation(
                report, m, f"{report.report_id}-none-{m.name}:{m.version}", system, patient,
                study, devices[(m.name, m.version)]))
    diagnostic = r.diagnostic_report(report, system, patient, study, observations)
    prov = r.provenance(report, system, [diagnostic, *observations], study,
                        list(devices.values()), engine)
    resources = [patient, study, engine, *devices.values(), *observations, diagnostic, prov]
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [entry(res) for res in resources]}
    validate_bundle(bundle)
    return bundle
