"""The message browser: search, one message with every content layer, reprocess.

Viewing content is audited (who, which message, when, masked or not) before the
answer leaves. Viewers get PHI masked in every layer (the ``message_layer`` view,
``mappings.hl7v2.view``) and in every field not on the routes' ``viewer=`` allow-lists
(control id, key, error); they may not search by control id or accession (403): a search
would tell them whether a message with a given identifier exists. Radiologists do not use
the message browser.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from engine import registry
from engine.admin import phi
from engine.admin.http import (
    audit,
    fail,
    int_param,
    ok,
    parse_time,
    path_int,
    read_json,
    state,
    who,
)
from engine.admin.routing import Panel, Param, Router, register_panel
from engine.admin.views import accessions_in, delivery_summary, message_summary
from engine.model import Message, Status
from engine.store.base import MessageQuery
from engine.store.protocols import MessageDesk

router = Router("messages")
READERS = ("admin", "analyst", "viewer")
OPERATORS = ("admin", "analyst")
ACCESSION_SCAN = 5000  # newest messages matching the other filters that an accession search reads
STATUSES = tuple(s.value for s in Status)

register_panel(Panel("messages", "Messages", "panels/messages.js", frozenset(READERS), order=20))

_FILTERS = (
    Param("channel", viewer=True), Param("status", enum=STATUSES, viewer=True),
    Param("type", description="e.g. ORM^O01", viewer=True),
    Param("control_id", description="MSH-10 (not for viewers: it can identify a patient)"),
    Param("accession", description="OBR-18 / IPC-1 (also OBR-20, ORC-2, ORC-3); reads the "
                                   f"newest {ACCESSION_SCAN} matches of the other filters "
                                   "(not for viewers)"),
    Param("since", description="ISO date/datetime (UTC) or epoch seconds", viewer=True),
    Param("until", viewer=True), Param("limit", "integer", "1..1000, default 100", viewer=True))
_LIST_VIEW = phi.view({"messages"}, phi.MESSAGE)
_MESSAGE_VIEW = phi.view(phi.MESSAGE, {"deliveries"}, phi.DELIVERY, phi.LAYERS)


def _store(request: web.Request) -> MessageDesk:
    """The store, as this module uses it (``engine.store.protocols.MessageDesk``)."""
    store: MessageDesk = state(request).engine.store
    return store


def _query(filters: dict[str, Any], limit: int) -> MessageQuery:
    status = filters.get("status") or None
    if status is not None and status not in STATUSES:
        fail(400, f"status must be one of {', '.join(STATUSES)}")
    return MessageQuery(channel=filters.get("channel") or None, status=status,
                        message_type=filters.get("type") or None,
                        control_id=filters.get("control_id") or None,
                        since=parse_time("since", filters.get("since")),
                        until=parse_time("until", filters.get("until")), limit=limit)


async def _search(request: web.Request, filters: dict[str, Any], limit: int) -> list[Message]:
    store = _store(request)
    accession = filters.get("accession") or None
    if accession is None:
        return list(await store.query_messages(_query(filters, limit)))
    candidates = await store.query_messages(_query(filters, ACCESSION_SCAN))

    def match() -> list[Message]:
        return [m for m in candidates if accession in accessions_in(m.raw)][:limit]

    return await asyncio.to_thread(match)


@router.get("/api/messages", roles=READERS, params=_FILTERS, viewer=_LIST_VIEW,
            summary="Search messages, newest first (metadata only; no content)")
async def list_messages(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 100, 1, 1000) or 100
    found = await _search(request, dict(request.query), limit)
    return ok({"messages": [message_summary(m) for m in found]})


def _layers(msg: Message, deliveries: list[Any], masked: bool) -> list[dict[str, Any]]:
    render_layer = registry.view("message_layer")
    layers = [render_layer("raw", msg.raw, masked)]
    layers += [render_layer(name, data, masked) for name, data in msg.layers.items()]
    for d in deliveries:
        layers.append(render_layer(f"sent to {d.destination}", d.payload, masked))
        if d.response is not None:
            layers.append(render_layer(f"response from {d.destination}", d.response, masked))
    return layers


@router.get("/api/messages/{id}", roles=READERS, audited=True,
            params=(Param("id", "integer", where="path", required=True),),
            summary="One message with every content layer, HL7 shown segment by segment",
            responses={200: "OK", 404: "no such message"}, viewer=_MESSAGE_VIEW)
async def get_message(request: web.Request) -> web.Response:
    masked = who(request).masked
    message_id = path_int(request, "id")
    found = await _store(request).get_message(message_id)
    if found is None:
        fail(404, f"no message {message_id}")
    msg, deliveries = found
    body = message_summary(msg)
    body["masked"] = masked
    body["deliveries"] = [delivery_summary(d) for d in deliveries]
    body["layers"] = await asyncio.to_thread(_layers, msg, deliveries, masked)
    await audit(request, "message.view", str(message_id), masked=masked)
    return ok(body)


_FILTER_TYPES: dict[str, Any] = {"since": ["string", "number"], "until": ["string", "number"]}
_REPROCESS_BODY = {
    "type": "object", "description": "ids, or a filter (at least one key)",
    "additionalProperties": False,
    "properties": {
        "ids": {"type": "array", "maxItems": 10_000,
                "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
        "filter": {"type": "object", "additionalProperties": False, "properties": {
            **{p.name: {"type": _FILTER_TYPES.get(p.name, p.type), "maxLength": 256}
               for p in _FILTERS},
            "status": {"type": "string", "enum": ["", *STATUSES]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10_000}}}}}


@router.post("/api/messages/reprocess", roles=OPERATORS, audited=True, body=_REPROCESS_BODY,
             summary="Run messages through their channel again (by ids or by filter)",
             responses={200: "how many were put back", 400: "neither ids nor a filter"})
async def reprocess_messages(request: web.Request) -> web.Response:
    body = await read_json(request)
    ids = body.get("ids")
    filters = body.get("filter")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or not ids:
            fail(400, "ids must be a non-empty list of integers")
    elif isinstance(filters, dict) and any(filters.values()):
        ids = [m.id for m in await _search(request, filters, filters.get("limit") or 1000)]
    else:
        fail(400, "give ids or a filter with at least one value")
    if len(ids) > 10_000:
        fail(400, "at most 10000 messages at once")
    await audit(request, "message.reprocess", ",".join(map(str, ids[:50])), count=len(ids))
    engine = state(request).engine
    n = await _store(request).reprocess(ids)
    for pipeline in engine.pipelines.values():
        pipeline.wake()
    return ok({"requested": len(ids), "reprocessed": n})
