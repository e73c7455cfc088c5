"""The admin API's router registry: route modules, dashboard panels, case timeline steps.

A route module defines ``router = Router("tag")`` and decorates its handlers::

    router = Router("models")

    @router.get("/api/models", roles=STAFF_ROLES, summary="Models and their versions")
    async def list_models(request: web.Request) -> web.Response: ...

``viewer=`` names what a viewer sees in clear (``engine.admin.phi.view``); an operation
that names nothing shows a viewer every value masked. A query parameter a viewer may
use says so (``Param(..., viewer=True)``); the others, like any undeclared one, are
refused to viewers with 403: they could find a patient by a key shown masked.

It is listed in ``ROUTE_MODULES`` (or added with ``register_module``). Modules in
``OPTIONAL_MODULES`` are loaded when they exist, so the worklist panel appears by
adding ``engine/admin/routes_worklist.py`` with a ``router`` and, for the dashboard,
a ``register_panel`` call and a JS module under ``static/panels/``. Every
operation's roles, parameters and responses feed the OpenAPI document and the
authorization tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.admin.phi import MASKED_WHOLE, ViewerView

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A timeline step source: (request, case as a dict) -> extra steps for the case timeline.
TimelineSource = Callable[[web.Request, dict[str, Any]], Awaitable[list[dict[str, Any]]]]

ROUTE_MODULES: list[str] = [
    "engine.admin.routes_system",
    "engine.admin.routes_channels",
    "engine.admin.routes_deliveries",
    "engine.admin.routes_messages",
    "engine.admin.routes_clinical",
    "engine.admin.routes_models",
    "engine.admin.routes_fhir",
]
OPTIONAL_MODULES: list[str] = ["engine.admin.routes_worklist"]


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter, documented in OpenAPI."""

    name: str
    type: str = "string"  # string | integer | number | boolean
    description: str = ""
    where: str = "query"
    required: bool = False
    enum: tuple[str, ...] | None = None
    viewer: bool = False  # a viewer may use it: it cannot find a patient by identifier


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    roles: frozenset[str]  # empty: public (no credentials)
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None  # JSON schema of the request body
    responses: dict[int, str] = field(default_factory=dict)
    audited: bool = False  # each call is written to the audit log
    viewer: ViewerView = MASKED_WHOLE  # what a masked caller sees in clear

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def public(self) -> bool:
        return not self.roles


class Router:
    """Collects one module's operations."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.operations: list[Operation] = []

    def route(self, method: str, path: str, *, roles: Iterable[str], summary: str,
              params: Iterable[Param] = (), body: dict[str, Any] | None = None,
              responses: dict[int, str] | None = None, audited: bool = False,
              viewer: ViewerView = MASKED_WHOLE) -> Callable[[Handler], Handler]:
        def wrap(handler: Handler) -> Handler:
            path_params = tuple(Param(p.strip("{}"), where="path", required=True)
                                for p in path.split("/") if p.startswith("{")
                                and not any(q.name == p.strip("{}") for q in params))
            self.operations.append(Operation(
                method.upper(), path, handler, frozenset(roles), summary, self.tag,
                path_params + tuple(params), body, dict(responses or {200: "OK"}), audited,
                viewer))
            return handler

        return wrap

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)


@dataclass(frozen=True, slots=True)
class Panel:
    """A dashboard panel: a JS module under ``static/`` with ``render(root, ctx)``."""

    id: str
    title: str
    module: str  # path below /ui/, e.g. "panels/channels.js"
    roles: frozenset[str]
    order: int = 100


PANELS: dict[str, Panel] = {}
TIMELINE_SOURCES: list[TimelineSource] = []


def register_module(name: str) -> None:
    """Add a route module (imported when the admin app is built)."""
    if name not in ROUTE_MODULES:
        ROUTE_MODULES.append(name)


def register_panel(panel: Panel) -> None:
    PANELS[panel.id] = panel


def register_timeline(source: TimelineSource) -> None:
    """Add steps (inference, outputs...) to every case timeline."""
    if source not in TIMELINE_SOURCES:
        TIMELINE_SOURCES.append(source)


def panels_for(role: str) -> list[Panel]:
    return sorted((p for p in PANELS.values() if role in p.roles), key=lambda p: p.order)


def operations() -> list[Operation]:
    """Every operation of every route module (optional ones only when they exist)."""
    ops: list[Operation] = []
    for name in ROUTE_MODULES + OPTIONAL_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in OPTIONAL_MODULES and exc.name == name:
                continue
            raise
        ops.extend(module.router.operations)
    return ops
