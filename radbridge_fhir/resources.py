"""One AIReport -> the FHIR R4 resources that carry it, one function per resource.

Pure functions of the report (no clock, no random source). References are
the deterministic ``urn:uuid:`` fullUrls of ``radbridge_fhir.ids``; the
Bundle (``radbridge_fhir.bundle``) puts them together. What each says::

    Patient           identifier (patient id, issuer as the system), name, birthDate, gender
    ImagingStudy      urn:dicom:uid identifier, accession (ACSN), series and instances
    Device            one per model (deviceName, version, type AI, DEMO note and property)
                      and one for radbridge itself (the Provenance assembler)
    Observation       one per finding: code = the finding, valueQuantity = the probability
                      (UCUM "1"), interpretation AA (critical) or A, bodySite text, device,
                      derivedFrom the study; one "NOFINDING" (ND) per model that found nothing
    DiagnosticReport  preliminary, RAD category, the order's procedure, every Observation,
                      the disclaimer (and DEMO) as conclusion, the findings as conclusionCode
    Provenance        targets the report and its Observations; performer = each model,
                      assembler = radbridge

AI-asserted resources (Observation, DiagnosticReport) carry the AIAST security label.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from engine.model import Finding
from engine.results.model import AIReport, ModelRun, ReportPatient
from mappings.hl7v2.oru import DEMO_NOTE, DISCLAIMER
from radbridge_fhir import codes
from radbridge_fhir.ids import full_url

DICOM_UID = "urn:dicom:uid"
MODEL_SYSTEM = "urn:radbridge:model"
SOFTWARE_SYSTEM = "urn:radbridge:software"
ENGINE_NAME = "radbridge"
_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_DATE = re.compile(r"(\d{4})(\d{2})?(\d{2})?")

Resource = dict[str, Any]


def instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def ref(resource: Resource, display: str | None = None) -> dict[str, str]:
    out = {"reference": url_of(resource)}
    if display:
        out["display"] = display
    return out


def url_of(resource: Resource) -> str:
    ident = resource.get("identifier") or []
    if ident:
        return full_url(ident[0]["system"], ident[0]["value"])
    tag = resource["meta"]["tag"][0]
    return full_url(tag["system"], tag["code"])


def ai_meta() -> dict[str, Any]:
    return {"security": [dict(codes.AIAST)]}


# -- who and what was imaged ----------------------------------------------------------------

def patient_system(issuer: str | None) -> str:
    """The identifier system of a patient id: its issuer (HL7 CX-4) as a URI."""
    if not issuer:
        return "urn:radbridge:patient-id"
    if _OID.fullmatch(issuer):
        return f"urn:oid:{issuer}"
    if issuer.startswith(("http://", "https://", "urn:")):
        return issuer
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in issuer)
    return f"urn:radbridge:issuer:{safe}"


def patient(p: ReportPatient) -> Resource:
    ident: dict[str, Any] = {"system": patient_system(p.issuer), "value": p.patient_id}
    if p.issuer:
        ident["assigner"] = {"display": p.issuer}
    out: Resource = {"resourceType": "Patient", "identifier": [ident]}
    if p.family or p.given:
        name: dict[str, Any] = {"family": p.family} if p.family else {}
        if p.given:
            name["given"] = [p.given]
        out["name"] = [name]
    if p.sex and p.sex.upper() in codes.GENDER:
        out["gender"] = codes.GENDER[p.sex.upper()]
    birth = _date(p.birth_date)
    if birth:
        out["birthDate"] = birth
    return out


def _date(hl7: str | None) -> str | None:
    """YYYY[MM[DD]] -> YYYY[-MM[-DD]]; anything else is left out (lenient in, strict out)."""
    match = _DATE.fullmatch((hl7 or "").strip()[:8])
    if not match:
        return None
    year, month, day = match.groups()
    try:
        datetime(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    return "-".join(x for x in (year, month, day) if x)


def imaging_study(report: AIReport, subject: Resource, procedure: Resource | None) -> Resource:
    uid = f"urn:oid:{report.study_uid}"
    identifiers: list[dict[str, Any]] = [{"system": DICOM_UID, "value": uid}]
    if report.accession:
        identifiers.append({"type": codes.ACCESSION_TYPE, "value": report.accession})
    series: dict[str, dict[str, Any]] = {}
    for inst in report.instances:
        entry = series.setdefault(inst.series_uid, {
            "uid": inst.series_uid,
            "modality": codes.coding(codes.DCM, inst.modality or report.modality or "OT"),
            "instance": []})
        entry["instance"].append({"uid": inst.sop_uid, "sopClass": codes.coding(
            "urn:ietf:rfc:3986", f"urn:oid:{inst.sop_class_uid}")})
    for entry in series.values():
        entry["numberOfInstances"] = len(entry["instance"])
    out: Resource = {"resourceType": "ImagingStudy", "identifier": identifiers,
                     "status": "available", "subject": ref(subject)}
    modalities = sorted({s["modality"]["code"] for s in series.values()}
                        or ({report.modality} if report.modality else set()))
    if modalities:
        out["modality"] = [codes.coding(codes.DCM, m) for m in modalities]
    if procedure is not None:
        out["procedureCode"] = [procedure]
    if series:
        out["numberOfSeries"] = len(series)
        out["numberOfInstances"] = sum(len(s["instance"]) for s in series.values())
        out["series"] = list(series.values())
    return out


# -- the AI -----------------------------------------------------------------------------------

def model_device(run: ModelRun) -> Resource:
    out: Resource = {
        "resourceType": "Device",
        "identifier": [{"system": MODEL_SYSTEM, "value": f"{run.name}:{run.version}"}],
        "status": "active",
        "deviceName": [{"name": run.name, "type": "model-name"}],
        "type": codes.AI_METHOD,
        "version": [{"value": run.version}],
    }
    if run.demo:
        out["note"] = [{"text": DEMO_NOTE}]
        out["property"] = [{"type": codes.DEMO_PROPERTY, "valueCode": [codes.YES]}]
    return out


def engine_device() -> Resource:
    return {
        "resourceType": "Device",
        "identifier": [{"system": SOFTWARE_SYSTEM, "value": ENGINE_NAME}],
        "status": "active",
        "deviceName": [{"name": ENGINE_NAME, "type": "user-friendly-name"}],
        "type": codes.concept(codes.coding(codes.LOCAL, "ENGINE", "Integration engine"),
                              text="radbridge integration engine"),
    }


def _observation(report: AIReport, system: str, value: str, subject: Resource,
                 study: Resource, device: Resource, device_name: str) -> Resource:
    return {
        "resourceType": "Observation", "meta": ai_meta(),
        "identifier": [{"system": system, "value": value}],
        "status": "preliminary", "category": [codes.IMAGING_CATEGORY],
        "subject": ref(subject),
        "effectiveDateTime": instant(report.study_completed_at or report.reported_at),
        "issued": instant(report.reported_at),
        "method": codes.AI_METHOD,
        "device": ref(device, device_name),
        "derivedFrom": [ref(study)],
    }


def finding_observation(report: AIReport, finding: Finding, value: str, system: str,
                        subject: Resource, study: Resource, device: Resource) -> Resource:
    out = _observation(report, system, value, subject, study, device,
                       f"{finding.model_name} {finding.model_version}")
    out["code"] = codes.concept(codes.coding(codes.system_uri(finding.coding_system),
                                             finding.code, finding.display),
                                text=finding.display)
    if finding.probability is not None:
        out["valueQuantity"] = {"value": round(float(finding.probability), 6),
                                **codes.PROBABILITY_UNIT}
    out["interpretation"] = [codes.CRITICAL if finding.critical else codes.ABNORMAL]
    if finding.location:
        out["bodySite"] = {"text": finding.location}
    notes = [n for n in (finding.detail, DEMO_NOTE if finding.demo else None) if n]
    if notes:
        out["note"] = [{"text": n} for n in notes]
    return _ordered(out)


def no_finding_observation(report: AIReport, run: ModelRun, value: str, system: str,
                           subject: Resource, study: Resource, device: Resource) -> Resource:
    out = _observation(report, system, value, subject, study, device,
                       f"{run.name} {run.version}")
    out["code"] = codes.NO_FINDING
    out["interpretation"] = [codes.NOT_DETECTED]
    if run.demo:
        out["note"] = [{"text": DEMO_NOTE}]
    return _ordered(out)


_ORDER = ("resourceType", "meta", "identifier", "status", "category", "code", "subject",
          "effectiveDateTime", "issued", "valueQuantity", "interpretation", "note", "bodySite",
          "method", "device", "derivedFrom")


def _ordered(resource: Resource) -> Resource:
    """The FHIR element order (readers look at JSON too)."""
    return {k: resource[k] for k in sorted(resource, key=lambda k: (
        _ORDER.index(k) if k in _ORDER else len(_ORDER), k))}


# -- the report -------------------------------------------------------------------------------

def procedure_code(report: AIReport) -> Resource | None:
    """The order's procedure (OBR-4) as a CodeableConcept, or None without one."""
    order = report.order
    if order is None or not order.procedure_code:
        return None
    return codes.concept(codes.coding(codes.system_uri(order.procedure_system),
                                      order.procedure_code, order.procedure_text),
                         text=order.procedure_text)


def conclusion(report: AIReport) -> str:
    lines = [DISCLAIMER]
    if report.demo:
        lines.append(DEMO_NOTE)
    for f in report.findings:
        extra = [f"probability {f.probability:.2f}" if f.probability is not None else "",
                 "critical" if f.critical else "", f.location or ""]
        detail = ", ".join(x for x in extra if x)
        lines.append(f"{f.display} ({detail}) [{f.model_name} {f.model_version}]" if detail
                     else f"{f.display} [{f.model_name} {f.model_version}]")
    for m in sent_models(report):
        if m.state == "error":
            lines.append(f"AI model {m.name} {m.version} did not complete; it gave no result.")
        elif not report.findings_of(m.name, m.version):
            lines.append(f"No finding detected by AI model {m.name} {m.version}.")
    return "\n".join(lines)


def sent_models(report: AIReport) -> list[ModelRun]:
    return [m for m in report.models if m.mode != "shadow"]


def diagnostic_report(report: AIReport, system: str, subject: Resource, study: Resource,
                      observations: list[Resource]) -> Resource:
    out: Resource = {
        "resourceType": "DiagnosticReport", "meta": ai_meta(),
        "identifier": [{"system": system, "value": report.report_id}],
    }
    order = report.order
    if order is not None and order.placer:
        out["basedOn"] = [{"type": "ServiceRequest",
                           "identifier": {"type": codes.PLACER_TYPE, "value": order.placer}}]
    out.update({
        "status": "preliminary", "category": [codes.RADIOLOGY_CATEGORY],
        "code": procedure_code(report) or codes.IMAGING_STUDY_CODE,
        "subject": ref(subject),
        "effectiveDateTime": instant(report.study_completed_at or report.reported_at),
        "issued": instant(report.reported_at),
        "result": [ref(o) for o in observations],
        "imagingStudy": [ref(study)],
        "conclusion": conclusion(report),
    })
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for f in report.findings:
        key = (codes.system_uri(f.coding_system), f.code)
        seen.setdefault(key, codes.concept(codes.coding(*key, f.display), text=f.display))
    if seen:
        out["conclusionCode"] = list(seen.values())
    return out


def provenance(report: AIReport, system: str, targets: list[Resource], study: Resource,
               devices: list[Resource], engine: Resource) -> Resource:
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": system, "code": f"{report.report_id}-provenance"}]},
        "target": [ref(t) for t in targets],
        "recorded": instant(report.reported_at),
        "activity": codes.CREATE,
        "agent": [{"type": codes.PERFORMER, "who": ref(d, d["deviceName"][0]["name"])}
                  for d in devices] + [{"type": codes.ASSEMBLER, "who": ref(engine,
                                                                            ENGINE_NAME)}],
        "entity": [{"role": "source", "what": ref(study)}],
    }
