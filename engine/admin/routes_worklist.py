"""The reading worklist, radiologist feedback on AI findings, and agreement per model.

The worklist is ranked by priority (STAT, URGENT, ROUTINE), then age; AI may
have raised a case, and the reason and the AI flags say why. AI findings are
a second read: a radiologist accepts, rejects or modifies each one here (or
their final report does it, see ``mappings.hl7v2.plugin.FinalReportsProcessor``), and
``/api/agreement`` sums those verdicts per model version — the drift signal.
Viewers see identifiers, and the free-text comments of feedback, masked (each route's
``viewer=`` allow-list, ``engine.admin.phi``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from engine.admin import phi
from engine.admin.auth import STAFF_ROLES
from engine.admin.http import audit, fail, int_param, ok, path_int, read_json, state, who
from engine.admin.routing import Panel, Param, Router, register_panel, register_timeline
from engine.results.model import report_id_for
from engine.store.base import MessageQuery
from engine.store.protocols import WorklistDesk
from engine.store.results import FeedbackEntry

router = Router("worklist")
register_panel(Panel("worklist", "Worklist", "panels/worklist.js", STAFF_ROLES, order=35))
READERS = ("admin", "radiologist")
VERDICTS = ("accept", "reject", "modify")
_READ_BODY = {"type": "object", "additionalProperties": False,
              "properties": {"read": {"type": "boolean"}}}
_TEXT = {"type": "string", "maxLength": 200}
_FEEDBACK_BODY = {
    "type": "object", "required": ["model", "version", "code", "verdict"],
    "additionalProperties": False,
    "properties": {"model": _TEXT, "version": _TEXT, "code": _TEXT,
                   "verdict": {"type": "string", "enum": list(VERDICTS)},
                   "corrected_code": {"type": ["string", "null"], "maxLength": 200},
                   "comment": {"type": ["string", "null"], "maxLength": 2000}}}


def _store(request: web.Request) -> WorklistDesk:
    """The store, as this module uses it (``engine.store.protocols.WorklistDesk``)."""
    store: WorklistDesk = state(request).engine.store
    return store


@router.get("/api/worklist", roles=STAFF_ROLES,
            summary="Open cases by priority (STAT first), then age; AI reasons and flags",
            params=(Param("limit", "integer", "1..1000, default 100", viewer=True),
                    Param("include_read", "boolean", "also cases already read", viewer=True)),
            viewer=phi.view({"worklist"}, phi.WORKLIST, phi.FINDING_FLAGS))
async def list_worklist(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 100, 1, 1000) or 100
    include_read = request.query.get("include_read", "").lower() in ("1", "true", "yes")
    rows = await _store(request).list_worklist(limit, include_read)
    return ok({"worklist": [dataclasses.asdict(r) for r in rows]})


@router.post("/api/worklist/{case_id}/read", roles=READERS, audited=True, body=_READ_BODY,
             summary="Mark a case read (off the list), or unread with {\"read\": false}",
             responses={200: "OK", 404: "no such case"})
async def mark_read(request: web.Request) -> web.Response:
    case_id = path_int(request, "case_id")
    body = await read_json(request)
    read = body.get("read", True)
    if not isinstance(read, bool):
        fail(400, "read must be true or false")
    await audit(request, "worklist.read" if read else "worklist.unread", str(case_id))
    if not await _store(request).mark_read(case_id, read):
        fail(404, f"no case {case_id}")
    return ok({"case_id": case_id, "read": read})


def _entry(case_id: int, body: dict[str, Any], reader: str) -> FeedbackEntry:
    def text(key: str, required: bool = True) -> str | None:
        value = body.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            fail(400, f"{key} must be a non-empty string of at most 200 characters")
        return value.strip()

    verdict = body.get("verdict")
    if verdict not in VERDICTS:
        fail(400, f"verdict must be one of {', '.join(VERDICTS)}")
    corrected = text("corrected_code", required=verdict == "modify")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
        fail(400, "comment must be a string of at most 2000 characters")
    return FeedbackEntry(case_id, text("model") or "", text("version") or "",
                         text("code") or "", verdict, "radiologist", corrected, reader, comment,
                         time.time())


@router.post("/api/cases/{case_id}/feedback", roles=READERS, audited=True, body=_FEEDBACK_BODY,
             summary="Accept, reject or modify an AI finding of a case",
             responses={200: "recorded", 400: "bad verdict", 404: "no such case or finding"})
async def post_feedback(request: web.Request) -> web.Response:
    case_id = path_int(request, "case_id")
    entry = _entry(case_id, await read_json(request), who(request).name)
    store = _store(request)
    if await store.get_case(case_id) is None:
        fail(404, f"no case {case_id}")
    findings = await store.list_findings(case_id, limit=10_000)
    if not any((s.finding.model_name, s.finding.model_version, s.finding.code)
               == (entry.model, entry.version, entry.code) for s in findings):
        fail(404, f"case {case_id} has no finding {entry.code} from {entry.model} "
                  f"{entry.version}")
    await audit(request, "feedback." + entry.verdict, str(case_id), model=entry.model,
                version=entry.version, code=entry.code)
    await store.record_feedback([entry])
    return ok(dataclasses.asdict(entry))


@router.get("/api/cases/{case_id}/feedback", roles=STAFF_ROLES,
            summary="Verdicts on the AI findings of a case (radiologists, final report)",
            viewer=phi.view({"feedback"}, phi.FEEDBACK))
async def get_feedback(request: web.Request) -> web.Response:
    case_id = path_int(request, "case_id")
    rows = await _store(request).list_feedback(case_id, limit=1000)
    return ok({"feedback": [dataclasses.asdict(r) for r in rows]})


@router.get("/api/agreement", roles=STAFF_ROLES,
            summary="Agreement of each model version with its readers (the drift signal)",
            viewer=phi.view({"agreement"}, phi.AGREEMENT))
async def get_agreement(request: web.Request) -> web.Response:
    rows = await _store(request).agreement()
    return ok({"agreement": [dict(dataclasses.asdict(r), agreement=r.agreement) for r in rows]})


async def result_steps(request: web.Request, case: dict[str, Any]) -> list[dict[str, Any]]:
    """Timeline steps of a case: its AI report on each ``ai_results`` channel and where each
    result went (destination and delivery status; no patient data)."""
    engine = state(request).engine
    store, report_id = _store(request), report_id_for(case["id"], case["revision"])
    steps: list[dict[str, Any]] = []
    for ch in engine.config.channel:
        if ch.source is None or ch.source.type != "ai_results":
            continue
        query = MessageQuery(channel=ch.name, control_id=report_id, limit=1)
        for m in await store.query_messages(query):
            found = await store.get_message(m.id)
            sent = ", ".join(f"{d.destination} {d.status}" for d in (found[1] if found else []))
            steps.append({"step": f"AI report: {ch.name}", "at": m.received_at, "detail": {
                "message_id": m.id, "status": str(m.status), "results": sent or None}})
    return [{**s, "detail": {k: v for k, v in s["detail"].items() if v is not None}}
            for s in steps]


register_timeline(result_steps)
