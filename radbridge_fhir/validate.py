"""Strict out: every resource we emit is validated before it leaves.

fhir.resources 8 ships R4B models (no R4 4.0.1); R4B changed none of the
elements we use (Patient, ImagingStudy, Device, Observation, DiagnosticReport,
Provenance, Task, Bundle), so a Bundle that validates here and uses only R4
elements is valid R4. Each resource is validated on its own, then the Bundle
envelope and its transaction rules, so an error names the resource and the
element at fault: ``FhirInvalid("Observation[2] (urn:uuid:…): valueQuantity.value: …")``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_BUNDLE_METHODS = {"POST", "PUT", "GET", "DELETE", "PATCH", "HEAD"}


class FhirInvalid(ValueError):
    """What we were about to send is not valid FHIR: do not send, do not retry.

    ``resource`` names the resource (``Observation[2] (urn:uuid:…)``), ``element`` the path
    within it (``valueQuantity.value``), either None when not known.
    """

    def __init__(self, reason: str, resource: str | None = None,
                 element: str | None = None) -> None:
        where = ": ".join(p for p in (resource, element) if p)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.resource = resource
        self.element = element


def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError) as exc:
        raise FhirInvalid(f"unknown resource type {resource_type!r}") from exc


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(resource)"


def validate_resource(resource: dict[str, Any], name: str | None = None) -> None:
    """Validate one resource against its R4B model; raises FhirInvalid on the first error."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    label = name or str(rtype)
    if not isinstance(rtype, str):
        raise FhirInvalid("no resourceType", label)
    try:
        _model(rtype).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise FhirInvalid(str(first["msg"]), label, _path(tuple(first["loc"]))) from exc


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Every entry's resource, then the Bundle; for a transaction also: each entry has a
    unique fullUrl and a request, and every ``urn:uuid:`` reference resolves inside it."""
    entries = bundle.get("entry") or []
    counts: dict[str, int] = {}
    urls: set[str] = set()
    for entry in entries:
        res = entry.get("resource") or {}
        rtype = str(res.get("resourceType"))
        counts[rtype] = counts.get(rtype, 0) + 1
        label = f"{rtype}[{counts[rtype]}] ({entry.get('fullUrl')})"
        validate_resource(res, label)
        if bundle.get("type") in ("transaction", "batch"):
            _check_request(entry, label)
        url = entry.get("fullUrl")
        if url in urls:
            raise FhirInvalid("fullUrl used twice", label, "fullUrl")
        if url:
            urls.add(url)
    from radbridge_fhir.ids import references

    for entry in entries:
        for ref in references(entry.get("resource") or {}):
            if ref.startswith("urn:uuid:") and ref not in urls:
                raise FhirInvalid(f"reference {ref} resolves to no entry",
                                  str(entry.get("fullUrl")), "reference")
    try:
        _model("Bundle").model_validate(bundle)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise FhirInvalid(str(first["msg"]), "Bundle", _path(tuple(first["loc"]))) from exc


def _check_request(entry: dict[str, Any], label: str) -> None:
    request = entry.get("request")
    if not isinstance(request, dict):
        raise FhirInvalid("a transaction entry needs a request", label, "request")
    if request.get("method") not in _BUNDLE_METHODS or not request.get("url"):
        raise FhirInvalid("request needs a method and a url", label, "request")
