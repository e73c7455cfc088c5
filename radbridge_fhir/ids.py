"""Deterministic ids and conditional creates: the same report never makes a second copy.

Every resource we send carries a business key: an ``identifier`` (system|value)
or, for Provenance (R4 gives it no identifier), a ``meta.tag``. Its bundle
``fullUrl`` is ``urn:uuid:`` + uuid5 of that key, and it is POSTed with
``ifNoneExist`` on the same key, so:

* the same report gives byte-identical Bundles (no clock, no random source);
* a retry or a replay finds what the first attempt created instead of adding to it;
* Patient, ImagingStudy and Device keys are natural (patient id, study UID, model
  and version), so every report of a patient points at one Patient;
* the local read store (``engine.store.fhir``) recomputes the id from the resource
  alone (``resource_id``): no side table of fullUrls is needed.

The uuid5 name is ``system + "/" + value`` in the URL namespace, the rule the
results channel's priority Task follows too.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote


def key_uuid(system: str, value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{system}/{value}"))


def full_url(system: str, value: str) -> str:
    return f"urn:uuid:{key_uuid(system, value)}"


def _escape(value: str) -> str:
    """FHIR search escaping (``\\``, ``,``, ``$``, ``|``), then URL encoding."""
    for ch in ("\\", ",", "$", "|"):
        value = value.replace(ch, "\\" + ch)
    return quote(value, safe=":/@-._~\\")


def token_query(param: str, system: str, value: str) -> str:
    """``identifier=system|value`` with both parts escaped for a search URL."""
    return f"{param}={_escape(system)}|{_escape(value)}"


def business_key(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(system, value) of the first identifier, else of the first meta.tag."""
    ident = resource.get("identifier")
    if isinstance(ident, dict):  # Reference-like single identifiers (none of ours, but safe)
        ident = [ident]
    for item in ident or []:
        if item.get("system") and item.get("value"):
            return item["system"], item["value"]
    for tag in (resource.get("meta") or {}).get("tag") or []:
        if tag.get("system") and tag.get("code"):
            return tag["system"], tag["code"]
    return None


def resource_id(resource: dict[str, Any]) -> str:
    """The resource's id: its own ``id``, else the uuid of its business key.

    Raises ValueError for a resource with neither (nothing to upsert it by)."""
    if resource.get("id"):
        return str(resource["id"])
    key = business_key(resource)
    if key is None:
        raise ValueError(f"{resource.get('resourceType')} has no id, identifier or tag")
    return key_uuid(*key)


def _references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def references(resource: dict[str, Any]) -> list[str]:
    """Every literal reference in *resource* (``urn:uuid:…`` or ``Type/id``)."""
    return [r["reference"] for r in _references(resource)]


def storable(resources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of bundle resources as a server would hold them: ``id`` set, and each
    ``urn:uuid:`` reference rewritten to ``Type/id`` (the uuid is the id, by the rule
    above; a reference to a resource outside *resources* keeps the type it names when
    the same uuid was seen, else stays as it is)."""
    out = [copy.deepcopy(r) for r in resources]
    types: dict[str, str] = {}
    for res in out:
        res["id"] = resource_id(res)
        types[f"urn:uuid:{res['id']}"] = f"{res['resourceType']}/{res['id']}"
    for res in out:
        for ref in _references(res):
            ref["reference"] = types.get(ref["reference"], ref["reference"])
    return out
