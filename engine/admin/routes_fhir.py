"""Read-only FHIR R4 API for EHRs that pull: what each AI report produced, as FHIR.

The resources are those of the transaction Bundles the results channel built
(saved by ``engine.store.fhir``); nothing here writes. Callers authenticate as
for the rest of the admin API (an API token as ``Authorization: Bearer`` is
what an EHR uses; give it the ``ehr`` role, which reads /fhir and nothing else). FHIR
carries patient identifiers, so the roles that see PHI may read it; viewers (PHI masked
everywhere) may not. Every read and search is
audited (type, id or parameter names, never their values).

Outcomes (all ``application/fhir+json``)::

    GET /fhir/metadata                 200 CapabilityStatement (R4 4.0.1)
    GET /fhir/{type}/{id}              200 the resource | 404 OperationOutcome (unknown type
                                       or id) | 400 OperationOutcome (malformed id)
    GET /fhir/{type}?patient=|subject=|identifier=|_id=|_count=
                                       200 searchset Bundle | 400 OperationOutcome (an
                                       unsupported parameter; or no criterion at all:
                                       code "required") | 404 (unknown type)

Absolute URLs (``fullUrl``, the Bundle's self link, the CapabilityStatement's
``implementation.url``) start with ``[admin] public_url``, else the listener's own
address; never with the request's Host header.
    401 / 403                          the admin API's JSON error (no or wrong credentials)
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from engine.admin.http import audit, state
from engine.admin.routing import Param, Router
from engine.store.protocols import FhirSearch

router = Router("fhir")
FHIR_READERS = ("admin", "analyst", "radiologist", "ehr")
FHIR_JSON = "application/fhir+json"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_FORMATS = {"json", FHIR_JSON, "application/json"}
MAX_COUNT = 1000
# type -> its search parameters besides _id and identifier (patient/subject are references).
TYPES: dict[str, tuple[str, ...]] = {
    "DiagnosticReport": ("patient", "subject"),
    "Observation": ("patient", "subject"),
    "ImagingStudy": ("patient", "subject"),
    "Device": (),
    "Provenance": ("patient",),
    "Patient": (),
    "Task": ("patient", "subject"),
}
_COMMON = ("_id", "identifier", "_count", "_format")


def _store(request: web.Request) -> FhirSearch:
    """The store, as this module uses it (``engine.store.protocols.FhirSearch``)."""
    store: FhirSearch = state(request).engine.store
    return store


def fhir_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type=FHIR_JSON, charset="utf-8")


def operation_outcome(status: int, code: str, text: str) -> web.Response:
    return fhir_response({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": text}]}, status)


def capability_statement(base: str) -> dict[str, Any]:
    def search_param(name: str) -> dict[str, str]:
        kind = "token" if name in ("_id", "identifier") else "reference"
        return {"name": name, "type": kind}

    resources = [{
        "type": rtype,
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [search_param(n) for n in ("_id", "identifier", *params)],
    } for rtype, params in TYPES.items()]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-12-01",
        "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
        "software": {"name": "radbridge"},
        "implementation": {"description": "radbridge: AI results, read-only", "url": base},
        "rest": [{
            "mode": "server",
            "documentation": "AI-generated preliminary results (meta.security AIAST). "
                             "Authenticate with an admin API token as a Bearer token.",
            "resource": resources,
        }],
    }


def _base(request: web.Request) -> str:
    """``[admin] public_url`` (else the listener's address) + ``/fhir``; never the Host
    header, which any client can set."""
    return f"{state(request).public_base}/fhir"


@router.get("/fhir/metadata", roles=FHIR_READERS, summary="FHIR CapabilityStatement (R4)",
            responses={200: "CapabilityStatement"})
async def fhir_metadata(request: web.Request) -> web.Response:
    return fhir_response(capability_statement(_base(request)))


@router.get("/fhir/{type}/{id}", roles=FHIR_READERS, audited=True,
            summary="Read one FHIR resource (AI results)",
            responses={200: "the resource", 400: "malformed id (OperationOutcome)",
                       404: "unknown type or id (OperationOutcome)"})
async def fhir_read(request: web.Request) -> web.Response:
    rtype, rid = request.match_info["type"], request.match_info["id"]
    if rtype not in TYPES:
        return operation_outcome(404, "not-supported", f"resource type {rtype} is not served")
    if not _ID.fullmatch(rid):
        return operation_outcome(400, "value", "not a FHIR id")
    await audit(request, "fhir.read", f"{rtype}/{rid}")
    found = await _store(request).search_fhir(rtype, resource_id=rid, limit=1)
    if not found:
        return operation_outcome(404, "not-found", f"{rtype}/{rid} is not known")
    return fhir_response(found[0])


class _BadSearch(Exception):
    """A search we refuse (400); ``code`` is the OperationOutcome issue type."""

    def __init__(self, text: str, code: str = "not-supported") -> None:
        super().__init__(text)
        self.code = code


def _required(rtype: str, criteria: dict[str, Any]) -> None:
    """A search names what it looks for: a bare ``GET /fhir/{type}`` would list every
    patient's results (as EHR-facing servers do, e.g. Epic's, it is refused, not paged)."""
    if not any(criteria[k] for k in ("resource_id", "patient", "identifier")):
        names = ", ".join(("_id", "identifier", *TYPES[rtype]))
        raise _BadSearch(f"a search on {rtype} needs at least one criterion: {names}",
                         "required")


def _criteria(rtype: str, query: Any) -> dict[str, Any]:
    allowed = {*_COMMON, *TYPES[rtype]}
    for name in query:
        if name not in allowed:
            raise _BadSearch(f"search parameter {name} is not supported on {rtype}")
        if len(query.getall(name)) > 1:
            raise _BadSearch(f"search parameter {name} given more than once")
    fmt = query.get("_format")
    if fmt is not None and fmt not in _FORMATS:
        raise _BadSearch("only JSON is served")
    patient, subject = query.get("patient"), query.get("subject")
    if subject and not subject.startswith("Patient/") and "/" in subject:
        raise _BadSearch("subject must be a Patient")
    if patient and subject and patient != subject:
        raise _BadSearch("patient and subject disagree")
    raw_count = query.get("_count", "100")
    if not raw_count.isdigit() or not 1 <= int(raw_count) <= MAX_COUNT:
        raise _BadSearch(f"_count must be 1..{MAX_COUNT}")
    rid = query.get("_id")
    if rid is not None and not _ID.fullmatch(rid):
        raise _BadSearch("_id is not a FHIR id")
    criteria = {"resource_id": rid, "patient": patient or subject or None,
                "identifier": query.get("identifier") or None, "limit": int(raw_count)}
    _required(rtype, criteria)
    return criteria


def _self_link(base: str, rtype: str, request: web.Request) -> str:
    query = request.rel_url.raw_query_string
    return f"{base}/{rtype}" + (f"?{query}" if query else "")


@router.get("/fhir/{type}", roles=FHIR_READERS, audited=True,
            summary="Search FHIR resources (AI results) by patient, subject or identifier",
            params=(Param("patient", description="Patient/<id>, a patient id or identifier"),
                    Param("subject", description="Patient/<id> (as patient)"),
                    Param("identifier", description="system|value or value"),
                    Param("_id"), Param("_count", "integer", "1..1000, default 100"),
                    Param("_format", enum=("json", FHIR_JSON, "application/json"))),
            responses={200: "searchset Bundle",
                       400: "unsupported parameter, or no criterion (OperationOutcome)",
                       404: "unknown type (OperationOutcome)"})
async def fhir_search(request: web.Request) -> web.Response:
    rtype = request.match_info["type"]
    if rtype not in TYPES:
        return operation_outcome(404, "not-supported", f"resource type {rtype} is not served")
    try:
        criteria = _criteria(rtype, request.query)
    except _BadSearch as exc:
        return operation_outcome(400, exc.code, str(exc))
    await audit(request, "fhir.search", rtype, params=",".join(sorted(request.query)) or None)
    found = await _store(request).search_fhir(rtype, **criteria)
    base = _base(request)
    return fhir_response({
        "resourceType": "Bundle", "type": "searchset",
        # total only when it is the whole answer (fewer than _count came back)
        **({"total": len(found)} if len(found) < criteria["limit"] else {}),
        "link": [{"relation": "self", "url": _self_link(base, rtype, request)}],
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in found],
    })
