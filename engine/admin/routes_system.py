"""Health, readiness, metrics, the OpenAPI document, login and the audit log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from typing import Any

from aiohttp import web

from engine import metrics
from engine.admin import phi
from engine.admin.auth import MAX_NAME, STAFF_ROLES, Principal
from engine.admin.http import (
    PRINCIPAL,
    SESSION,
    audit,
    fail,
    int_param,
    ok,
    read_json,
    state,
    time_param,
    who,
)
from engine.admin.openapi import build_document
from engine.admin.routing import Panel, Param, Router, panels_for, register_panel
from engine.admin.sessions import COOKIE
from engine.admin.throttle import Ticket, client_key
from engine.logs import event
from engine.store.protocols import MessageDesk

log = logging.getLogger("radbridge.admin")
router = Router("system")
register_panel(Panel("audit", "Audit log", "panels/audit.js", frozenset({"admin"}), order=90))
_STARTED = time.time()
LOGIN_BODY_MAX = 4096  # bytes: a login is a name and a password, nothing more
_LOGIN_BODY = {"type": "object", "required": ["username", "password"],
               "properties": {"username": {"type": "string", "maxLength": MAX_NAME},
                              "password": {"type": "string"}}}


def _store(engine: Any) -> MessageDesk:
    """The store, as this module uses it (``engine.store.protocols.MessageDesk``)."""
    store: MessageDesk = engine.store
    return store


@router.get("/health", roles=(), summary="Liveness: the process answers",
            responses={200: "alive"})
async def health(request: web.Request) -> web.Response:
    return ok({"status": "ok", "uptime_secs": round(time.time() - _STARTED, 1)})


async def _down_parts(engine: Any) -> tuple[list[str], list[str]]:
    """(parts that are down, parts that are degraded but do not stop traffic)."""
    down: list[str] = []
    degraded: list[str] = []
    if not getattr(engine, "started", False):
        down.append("engine")
    try:
        await asyncio.wait_for(_store(engine).get_message(0), 2.0)
    except Exception:
        down.append("store")
    for ch in engine.config.channel:
        state_ = engine.controls.channel_state(ch.name)
        if state_ == "failed" or (state_ == "stopped" and ch.name not in engine.controls.stopped):
            down.append(f"channel:{ch.name}")
    stalled = set(engine.stalled_queues())
    for name, worker in engine.workers.items():
        if name in stalled:
            down.append(f"destination:{name}")
        elif worker.backoff > 0:
            degraded.append(f"destination:{name}")
    return down, degraded


def _stalled(engine: Any) -> list[dict[str, Any]]:
    """Each stalled queue: its head (our ids) and how long it has not moved."""
    out = []
    for name in engine.stalled_queues():
        worker = engine.workers[name]
        head = worker.head
        out.append({"destination": name, "head_age_secs": round(worker.head_age(), 1),
                    "delivery": head.id if head else None,
                    "message": head.message_id if head else None})
    return out


@router.get("/ready", roles=(), summary="Readiness: 503 naming the parts that are down",
            responses={200: "ready", 503: "not ready; `down` names the parts (a destination "
                                          "whose queue head has not moved for "
                                          "stalled_queue_secs among them, in `stalled`)"})
async def ready(request: web.Request) -> web.Response:
    engine = state(request).engine
    down, degraded = await _down_parts(engine)
    stalled = _stalled(engine)
    if down:
        return ok({"status": "unavailable", "down": down, "degraded": degraded,
                   "stalled": stalled}, 503)
    return ok({"status": "ready", "down": [], "degraded": degraded, "stalled": []})


@router.get("/metrics", roles=STAFF_ROLES, summary="Prometheus metrics (text exposition)",
            responses={200: "Prometheus text format 0.0.4"},
            viewer=phi.view(raw=True))  # counts by channel and status: no PHI (see tests)
async def get_metrics(request: web.Request) -> web.Response:
    st = state(request)
    body = metrics.render(st.engine, st.sampler.snapshot)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


@router.get("/api/openapi.json", roles=(), summary="This API as an OpenAPI 3.1 document")
async def openapi(request: web.Request) -> web.Response:
    from engine.admin.app import effective_operations

    return ok(build_document(effective_operations(state(request).conf)))


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


@router.post("/api/login", roles=(), summary="Log in to the dashboard (sets a session cookie)",
             body=_LOGIN_BODY,
             responses={200: "logged in", 400: "no user name or password, or a name over "
                        f"{MAX_NAME} characters", 401: "wrong user name or password",
                        403: "a role without dashboard sessions (ehr)",
                        413: f"a body over {LOGIN_BODY_MAX} bytes",
                        415: "not Content-Type: application/json",
                        429: "too many failures (Retry-After says when to try again)"})
async def login(request: web.Request) -> web.Response:
    st = state(request)
    name, password = await _credentials(request)
    ticket = st.throttle.reserve(name, client_key(request.remote))
    if not isinstance(ticket, Ticket):
        event(log, "ADM-203", "login throttled", user_hash=_hash(name), peer=request.remote,
              level=logging.WARNING)
        fail(429, "too many failed logins; try again later", retry_after_secs=math.ceil(ticket))
    principal = await asyncio.to_thread(st.directory.login, name, password)
    if principal is None:
        known = name if name in st.directory.users else "(unknown)"
        request[PRINCIPAL] = Principal(known, "-", "login")
        await audit(request, "login.failed")
        event(log, "ADM-202", "login refused", user_hash=_hash(name), level=logging.WARNING)
        fail(401, "wrong user name or password")
    st.throttle.succeeded(ticket)
    if principal.role not in STAFF_ROLES:  # ehr: a system account, API tokens only
        request[PRINCIPAL] = principal
        await audit(request, "login.refused")
        fail(403, f"the {principal.role} role uses API tokens, not dashboard sessions")
    token, session = st.sessions.create(principal)
    request[PRINCIPAL] = principal
    await audit(request, "login")
    event(log, "ADM-201", "login", user=principal.name, role=principal.role)
    resp = ok({"user": principal.name, "role": principal.role, "csrf": session.csrf})
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                    secure=st.secure_cookies)
    return resp


async def _credentials(request: web.Request) -> tuple[str, str]:
    """The user name and password of a login, bounded before anything is looked up: a JSON
    body (a form or text/plain could be posted cross-site: login CSRF) of at most
    ``LOGIN_BODY_MAX`` bytes, a name of at most ``MAX_NAME`` characters."""
    if request.content_type != "application/json":
        fail(415, "log in with a JSON body (Content-Type: application/json)")
    body = await read_json(request, max_bytes=LOGIN_BODY_MAX)
    name, password = body.get("username"), body.get("password")
    if not (isinstance(name, str) and isinstance(password, str) and name and password):
        fail(400, "username and password are required")
    if len(name) > MAX_NAME:
        fail(400, f"username is longer than {MAX_NAME} characters")
    return name, password


@router.post("/api/logout", roles=STAFF_ROLES, summary="End the dashboard session",
             viewer=phi.view({"status"}))
async def logout(request: web.Request) -> web.Response:
    principal = who(request)
    if COOKIE in request.cookies:
        state(request).sessions.drop(request.cookies[COOKIE])
    await audit(request, "logout")
    event(log, "ADM-204", "logout", user=principal.name)
    resp = ok({"status": "logged out"})
    resp.del_cookie(COOKIE, path="/")
    return resp


@router.get("/api/session", roles=STAFF_ROLES,
            summary="Who is calling: role, CSRF token, dashboard panels, allowed operations",
            viewer=phi.view({"user", "role", "via", "masked", "csrf", "panels", "id", "title",
                             "module", "operations"}))
async def session(request: web.Request) -> web.Response:
    from engine.admin.app import effective_operations

    principal = who(request)
    sess = request.get(SESSION)
    allowed = sorted(op.operation_id for op in effective_operations(state(request).conf)
                     if principal.role in op.roles)
    return ok({"user": principal.name, "role": principal.role, "via": principal.via,
               "masked": principal.masked, "csrf": sess.csrf if sess else None,
               "panels": [{"id": p.id, "title": p.title, "module": p.module}
                          for p in panels_for(principal.role)],
               "operations": allowed})


@router.get("/api/audit", roles=("admin",), summary="The audit log, newest first",
            params=(Param("user"), Param("action", description="e.g. message.view"),
                    Param("target"), Param("since", description="ISO date/datetime or epoch"),
                    Param("until"), Param("limit", "integer")))
async def audit_log(request: web.Request) -> web.Response:
    entries = await state(request).audit.query(
        user=request.query.get("user") or None, action=request.query.get("action") or None,
        target=request.query.get("target") or None, since=time_param(request, "since"),
        until=time_param(request, "until"), limit=int_param(request, "limit", 100, 1, 5000)
        or 100)
    return ok({"entries": [e.to_dict() for e in entries]})
