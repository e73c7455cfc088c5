"""Operator actions on one delivery: skip or cancel a queued one, retry a failed one.

A queue head that keeps failing (see ``/ready``'s ``stalled``) blocks the deliveries
behind it; an operator skips it (ERROR, "SKIPPED by ann: why"), and the queue moves
on at once. Every action is audited with its reason before it is made.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.admin.http import audit, fail, ok, path_int, read_json, state, who
from engine.admin.routing import Router
from engine.flow.delivery import clean_reason, operate
from engine.store.deliveries import DeliveryInfo
from engine.store.protocols import DeliveryActions

router = Router("deliveries")
OPERATORS = ("admin", "analyst")
_BODY = {"type": "object", "required": ["reason"], "properties": {"reason": {
    "type": "string", "description": "Why: kept with the delivery and in the audit log."}}}
_RESPONSES = {200: "the delivery after the change", 400: "no reason given",
              404: "no such delivery", 409: "not possible in the delivery's status"}


def _store(request: web.Request) -> DeliveryActions:
    """The store, as this module uses it (``engine.store.protocols.DeliveryActions``)."""
    store: DeliveryActions = state(request).engine.store
    return store


def delivery_view(d: DeliveryInfo) -> dict[str, Any]:
    return {"id": d.id, "message_id": d.message_id, "destination": d.destination,
            "status": str(d.status), "attempts": d.attempts, "error": d.error,
            "updated_at": d.updated_at}


async def _act(request: web.Request, action: str) -> web.Response:
    st = state(request)
    delivery_id = path_int(request, "id")
    try:
        reason = clean_reason((await read_json(request)).get("reason"))
    except ValueError as exc:
        fail(400, str(exc))
    info = await _store(request).get_delivery(delivery_id)
    if info is None:
        fail(404, f"no delivery {delivery_id}")
    await audit(request, f"delivery.{action}", str(delivery_id),
                destination=info.destination, message=info.message_id, reason=reason)
    try:
        after = await operate(_store(request), delivery_id, action, who(request).name, reason)
    except LookupError as exc:
        fail(404, str(exc))
    except ValueError as exc:
        fail(409, str(exc))
    worker = st.engine.workers.get(after.destination)
    if worker is not None:
        worker.poke()
    await st.sampler.refresh()
    return ok(delivery_view(after))


@router.post("/api/deliveries/{id}/skip", roles=OPERATORS, audited=True, body=_BODY,
             responses=_RESPONSES,
             summary="Skip a queued delivery (a stuck head): ERROR with who and why; the "
                     "queue moves on")
async def skip_delivery(request: web.Request) -> web.Response:
    return await _act(request, "skip")


@router.post("/api/deliveries/{id}/cancel", roles=OPERATORS, audited=True, body=_BODY,
             responses=_RESPONSES,
             summary="Cancel a queued delivery: it is not sent (ERROR with who and why)")
async def cancel_delivery(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


@router.post("/api/deliveries/{id}/retry", roles=OPERATORS, audited=True, body=_BODY,
             responses=_RESPONSES,
             summary="Retry a failed (ERROR) delivery: queued again, sent next")
async def retry_delivery(request: web.Request) -> web.Response:
    return await _act(request, "retry")
