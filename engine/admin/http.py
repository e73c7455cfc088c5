"""What every admin handler uses: the shared state, the caller, errors as JSON, parameters."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web

from engine.admin.audit import AuditLog
from engine.admin.auth import Directory, Principal
from engine.admin.routing import Operation
from engine.admin.sessions import Session, SessionStore
from engine.admin.stats import Sampler
from engine.admin.throttle import LoginThrottle
from engine.admin.validate import BodyError, check
from engine.admin.views import StoreViews
from engine.logs import event

log = logging.getLogger("radbridge.admin")


@dataclass(slots=True)
class AdminState:
    engine: Any
    conf: Any  # engine.config.schema.AdminConfig
    directory: Directory
    sessions: SessionStore
    throttle: LoginThrottle
    audit: AuditLog
    sampler: Sampler
    views: StoreViews
    secure_cookies: bool
    # Where clients reach us: [admin] public_url, else the bound listener (set at start).
    # Every absolute URL we return starts with it; request headers (Host) never shape one.
    public_base: str = ""


STATE = web.AppKey("radbridge_admin_state", AdminState)
PRINCIPAL = web.RequestKey("radbridge_principal", Principal)  # absent: anonymous
SESSION = web.RequestKey("radbridge_session", Session)  # present for cookie sessions
OPERATION = web.RequestKey("radbridge_operation", Operation)  # the route being served


class ApiError(Exception):
    """An answer other than success: status, a sentence for people, optional fields."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def fail(status: int, detail: str, **extra: Any) -> NoReturn:
    raise ApiError(status, detail, **extra)


def state(request: web.Request) -> AdminState:
    return request.app[STATE]


def who(request: web.Request) -> Principal:
    """The authenticated caller (the guard has already refused anonymous ones)."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        fail(401, "authentication required")
    return principal


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=_default), status=status,
                        content_type="application/json")


def int_param(request: web.Request, name: str, default: int | None = None, lo: int = 0,
              hi: int = 10**12) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        fail(400, f"{name} must be an integer")
    if not lo <= value <= hi:
        fail(400, f"{name} must be between {lo} and {hi}")
    return value


def float_param(request: web.Request, name: str, default: float, lo: float = 0.0,
                hi: float = 1e12) -> float:
    """A finite number between *lo* and *hi* (400 otherwise), *default* when absent."""
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        fail(400, f"{name} must be a number")
    if not (math.isfinite(value) and lo <= value <= hi):
        fail(400, f"{name} must be a number between {lo:g} and {hi:g}")
    return value


MAX_ID = 2**63 - 1  # the stores' row ids are 64-bit


def path_int(request: web.Request, name: str) -> int:
    """A row id from the path: 400 unless it is an integer a store can hold."""
    try:
        value = int(request.match_info[name])
    except ValueError:
        fail(400, f"{name} must be an integer")
    if not 0 <= value <= MAX_ID:
        fail(400, f"{name} must be between 0 and {MAX_ID}")
    return value


def parse_time(name: str, raw: Any) -> float | None:
    """An ISO date or datetime (UTC when no offset is given) or epoch seconds."""
    if raw in (None, ""):
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return _finite(name, float(raw))
    try:
        return _finite(name, float(str(raw)))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(str(raw))
    except ValueError:
        fail(400, f"{name} must be an ISO date/datetime or epoch seconds")
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        fail(400, f"{name} must be an ISO date/datetime or epoch seconds")
    return value


def time_param(request: web.Request, name: str) -> float | None:
    return parse_time(name, request.query.get(name))


async def read_json(request: web.Request, max_bytes: int | None = None) -> dict[str, Any]:
    """The JSON object body (an empty body reads as ``{}``), checked against the schema its
    operation declares (``engine.admin.validate``): 400 with the key that is wrong. With
    *max_bytes*, a longer body is refused (413) before more than that is read (the app-wide
    limit is 8 MiB)."""
    if not request.can_read_body:
        return {}
    try:
        if max_bytes is None:
            body = await request.json()
        else:
            body = json.loads(await _read_at_most(request, max_bytes))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        fail(400, "the body is not valid JSON")
    if not isinstance(body, dict):
        fail(400, "the body must be a JSON object")
    op = request.get(OPERATION)
    if op is not None and op.body is not None:
        try:
            check(body, op.body)
        except BodyError as exc:
            fail(400, str(exc))
    return body


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    too_big = f"the body is larger than {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        fail(413, too_big)
    data = bytearray()
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
    fail(413, too_big)


async def audit(request: web.Request, action: str, target: str | None = None,
                **detail: Any) -> None:
    """Write an audit entry before answering; if it cannot be written, refuse (503)."""
    principal = who(request)
    try:
        await state(request).audit.record(principal, action, target,
                                          {k: v for k, v in detail.items() if v is not None},
                                          request.remote)
    except Exception as exc:
        event(log, "ADM-701", "audit entry not written, request refused", action=action,
              reason=type(exc).__name__, level=logging.ERROR)
        fail(503, "the audit log cannot be written; nothing was shown or changed")
    event(log, "ADM-300", "audited", user=principal.name, role=principal.role, action=action,
          target=target, level=logging.DEBUG if action.endswith(".view") else logging.INFO)
