"""The aiohttp application: who is calling, may they, errors as JSON, the dashboard files.

Every API operation comes from the router registry (``engine.admin.routing``)
and is wrapped by ``_guard``, which answers:

* 401 no or unknown credentials (Bearer token or session cookie)
* 403 the caller's role may not use the operation, or a cookie-authenticated
  change without the session's ``X-CSRF-Token``, or a viewer's query parameter that the
  operation does not allow viewers (``Param(viewer=True)``: they could find a patient)

and, for a masked caller (the viewer role), passes every answer of a non-public
operation through the operation's allow-list (``engine.admin.phi.ViewerView``): values
of keys it does not list become ``***``. Error answers (4xx) are the server's own
sentence about the caller's request and pass unchanged.

The dashboard itself is static (``static/``): plain HTML, CSS and ES modules,
served as files with a strict Content-Security-Policy; ``/`` sends callers
without a session to ``/login``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from engine.admin.http import (
    OPERATION,
    PRINCIPAL,
    SESSION,
    STATE,
    AdminState,
    ApiError,
    ok,
    state,
)
from engine.admin.policy import same_secret
from engine.admin.routing import Operation, operations
from engine.admin.sessions import COOKIE
from engine.logs import event

log = logging.getLogger("radbridge.admin")
STATIC = Path(__file__).parent / "static"
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """ApiError and HTTP errors under /api become JSON; a bug becomes a 500, never a trace.
    An error carrying ``retry_after_secs`` also says so in a ``Retry-After`` header."""
    try:
        return await handler(request)
    except ApiError as exc:
        resp = ok({"error": exc.detail, **exc.extra}, exc.status)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="radbridge"'
        if exc.status == 413:  # the rest of the body was never read: do not wait for it
            resp.force_close()
        if "retry_after_secs" in exc.extra:
            resp.headers["Retry-After"] = str(exc.extra["retry_after_secs"])
        return resp
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        return ok({"error": exc.reason}, exc.status)
    except Exception as exc:
        event(log, "ADM-590", "request failed unexpectedly", method=request.method,
              route=request.match_info.route.resource.canonical
              if request.match_info.route.resource else request.path,
              reason=type(exc).__name__, level=logging.ERROR)
        return ok({"error": "internal error (logged)"}, 500)


@web.middleware
async def _identify(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Find the caller: ``Authorization: Bearer <token>`` or the session cookie."""
    st = state(request)
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        principal = st.directory.token(auth[7:].strip())
        if principal is not None:
            request[PRINCIPAL] = principal
    elif COOKIE in request.cookies:
        session = st.sessions.get(request.cookies[COOKIE])
        if session is not None:
            request[PRINCIPAL] = session.principal
            request[SESSION] = session
    return await handler(request)


def _guard(op: Operation) -> _Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if op.roles:
            principal = request.get(PRINCIPAL)
            if principal is None:
                raise ApiError(401, "authentication required")
            if principal.role not in op.roles:
                raise ApiError(403, f"the {principal.role} role may not use {op.method} "
                                    f"{op.path}")
            session = request.get(SESSION)
            if (op.method != "GET" and session is not None
                    and not same_secret(request.headers.get("X-CSRF-Token"), session.csrf)):
                raise ApiError(403, "missing or wrong X-CSRF-Token")
            if principal.masked:
                _viewer_query(op, request)
        request[OPERATION] = op
        response = await op.handler(request)
        principal = request.get(PRINCIPAL)
        if op.roles and principal is not None and principal.masked:
            return _viewer_answer(op, response)
        return response

    guarded.__name__ = op.operation_id
    return guarded


def _viewer_query(op: Operation, request: web.Request) -> None:
    """A viewer may use only the query parameters the operation allows viewers."""
    allowed = {p.name for p in op.params if p.where == "query" and p.viewer}
    for name in request.query:
        if name in allowed:
            continue
        if any(p.name == name for p in op.params):
            raise ApiError(403, f"the viewer role may not search by {name}: it can identify a "
                                "patient")
        raise ApiError(403, f"the viewer role may not use the query parameter {name[:40]!r} "
                            f"on {op.method} {op.path}")


def _viewer_answer(op: Operation, response: web.StreamResponse) -> web.StreamResponse:
    """The answer as a viewer may see it: JSON through the operation's allow-list."""
    if isinstance(response, web.Response) and response.content_type == "application/json":
        if response.status < 400 and response.text is not None:
            response.text = json.dumps(op.viewer.apply(json.loads(response.text)))
        return response
    if op.viewer.raw:
        return response
    raise ApiError(403, f"{op.method} {op.path} has no view for the viewer role")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api/") or request.path == "/metrics":
        response.headers.setdefault("Cache-Control", "no-store")


async def _index(request: web.Request) -> web.StreamResponse:
    if request.get(PRINCIPAL) is None or request.get(SESSION) is None:
        raise web.HTTPFound("/login")
    return web.FileResponse(STATIC / "index.html")


async def _login_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "login.html")


def effective_operations(conf: object) -> list[Operation]:
    """The registry's operations as this configuration serves them."""
    ops = operations()
    if getattr(conf, "metrics_public", False):
        ops = [dataclasses.replace(o, roles=frozenset()) if o.path == "/metrics" else o
               for o in ops]
    return ops


def build_app(st: AdminState) -> web.Application:
    app = web.Application(middlewares=[_errors, _identify], client_max_size=8 * 2**20)
    app[STATE] = st
    for op in effective_operations(st.conf):
        app.router.add_route(op.method, op.path, _guard(op), name=op.operation_id)
    app.router.add_get("/", _index)
    app.router.add_get("/login", _login_page)
    app.router.add_static("/ui/", STATIC, append_version=False)
    app.on_response_prepare.append(_headers)
    return app
