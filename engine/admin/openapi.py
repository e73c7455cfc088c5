"""The OpenAPI 3.1 document, built from the router registry.

Each operation lists its roles in ``x-roles`` (empty: public) and whether its
calls are audited in ``x-audited``; the authorization tests read both. An operation
a viewer may call lists the keys a viewer sees in clear in ``x-viewer-clear`` (every
other value is ``***``), and a parameter a viewer may use carries ``x-viewer: true``.
"""

from __future__ import annotations

from typing import Any

from engine.admin.auth import ROLES
from engine.admin.routing import Operation, Param

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
_COMMON = {401: "no or unknown credentials", 403: "role not allowed, or missing CSRF token"}


def _param(p: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": p.type}
    if p.enum:
        schema["enum"] = list(p.enum)
    out: dict[str, Any] = {"name": p.name, "in": p.where, "required": p.required or
                           p.where == "path", "schema": schema}
    if p.description:
        out["description"] = p.description
    if p.where == "query":
        out["x-viewer"] = p.viewer
    return out


def _responses(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    codes = dict(op.responses)
    if op.roles:
        codes = {**codes, **{k: v for k, v in _COMMON.items() if k not in codes}}
    for code, text in sorted(codes.items()):
        entry: dict[str, Any] = {"description": text}
        if code >= 400:
            entry["content"] = {"application/json": {"schema": _ERROR}}
        out[str(code)] = entry
    return out


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
        "x-roles": sorted(op.roles), "x-audited": op.audited,
        "responses": _responses(op),
    }
    doc["description"] = (op.handler.__doc__ or op.summary).strip()
    if "viewer" in op.roles:
        doc["x-viewer-clear"] = sorted(op.viewer.clear | op.viewer.maps)
    if op.params:
        doc["parameters"] = [_param(p) for p in op.params]
    if op.body is not None:
        doc["requestBody"] = {"required": bool(op.body.get("required")),
                              "content": {"application/json": {"schema": op.body}}}
    doc["security"] = [] if op.public else [{"bearer": []}, {"session": []}]
    return doc


def build_document(ops: list[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "radbridge admin API", "version": "1",
            "description": "Channels, statistics, messages, queues, studies and cases of a "
                           "running radbridge engine. Roles: " + ", ".join(ROLES) + ". Viewers "
                           "see PHI masked; ehr (a system account) reads /fhir only; every "
                           "view of message content is audited.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "An API token (python -m engine.admin new-token)."},
            "session": {"type": "apiKey", "in": "cookie", "name": "radbridge_session",
                        "description": "Set by POST /api/login; changes need X-CSRF-Token."},
        }},
    }
