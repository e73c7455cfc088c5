"""The admin listener's lifecycle, owned by the Engine: built before anything opens (so weak
credentials stop the start early), started last, stopped first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.admin.app import build_app
from engine.admin.audit import AuditLog
from engine.admin.auth import Directory, admin_name, check_credentials, is_loopback
from engine.admin.firstrun import first_run_password
from engine.admin.http import AdminState
from engine.admin.sessions import SessionStore
from engine.admin.stats import Sampler
from engine.admin.throttle import LoginThrottle
from engine.admin.views import StoreViews
from engine.config.base import parse_hostport
from engine.httplimits import BodyTimeout, LimitedListener, read_within, runner_options
from engine.logs import event

log = logging.getLogger("radbridge.admin")


def listener_url(host: str, port: int, tls: bool) -> str:
    """``http(s)://host:port`` of a bound listener (IPv6 hosts in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


class AdminServer:
    """Admin API, dashboard, /metrics, /health and /ready on one HTTP(S) listener."""

    def __init__(self, engine: Any, conf: Any, directory: Directory | None = None) -> None:
        """Load credentials (from the environment unless given) and check them.

        On loopback with no admin user or token, the admin's password is the first-run
        file ``<data_dir>/admin-password`` (created once). Raises ``AdminCredentialsError``
        when the listener is not on loopback and any user's or token's credential breaks
        the policy (``engine.admin.policy``), or no admin is configured.
        """
        self.engine = engine
        self.conf = conf
        self.host, self.port = parse_hostport(conf.listen, "127.0.0.1")
        self.directory = directory if directory is not None else Directory.from_env()
        self.password_file: Path | None = None  # the first-run password, when one is used
        if is_loopback(self.host) and not self.directory.has_admin():
            self.password_file = self._first_run_password(Path(engine.config.engine.data_dir))
        data_dir = Path(engine.config.engine.data_dir)
        for problem in check_credentials(self.directory, self.host,
                                         data_dir / "admin-probed" if data_dir.is_dir() else None):
            event(log, "ADM-601", "weak admin credentials (loopback only)", problem=problem,
                  level=logging.WARNING)
        audit_path = conf.audit_path or str(Path(engine.config.engine.data_dir) / "audit.db")
        views = StoreViews(engine.store)
        self.state = AdminState(
            engine=engine, conf=conf, directory=self.directory,
            sessions=SessionStore(conf.session_idle_secs, conf.session_max_secs),
            throttle=LoginThrottle(), audit=AuditLog(audit_path),
            sampler=Sampler(engine, views, conf.stats_interval_secs), views=views,
            secure_cookies=conf.tls is not None if conf.secure_cookies is None
            else conf.secure_cookies)
        self._runner: web.AppRunner | None = None
        self._listener: LimitedListener | None = None
        self._sampler_task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None

    @property
    def admin_user(self) -> str:
        """The user the first-run password belongs to."""
        return admin_name(os.environ)

    def _first_run_password(self, data_dir: Path) -> Path | None:
        """Loopback, no admin configured: use (or create) ``<data_dir>/admin-password``."""
        name = self.admin_user
        if name in self.directory.users:  # that name is taken by a non-admin user
            event(log, "ADM-604", "no admin password generated: the name is taken", user=name,
                  level=logging.WARNING)
            return None
        path, password, created = first_run_password(data_dir, name)
        self.directory.set_admin_password(name, password)
        event(log, "ADM-602", "admin password file", user=name, path=str(path.resolve()),
              created=created)
        return path.resolve()

    def dashboard_line(self) -> str:
        """What ``radbridge run`` prints at READY: the dashboard's address and, when the
        first-run password is in use, which user it is for and where it is (never itself)."""
        assert self.address is not None, "the admin listener has not started"
        url = listener_url(*self.address, self.conf.tls is not None) + "/"
        if self.password_file is None:
            return f"dashboard {url}"
        return f"dashboard {url} (user {self.admin_user}, password in {self.password_file})"

    @property
    def listener(self) -> LimitedListener | None:
        """The HTTP listener once started (its ``gate`` counts connections per address)."""
        return self._listener

    async def start(self) -> None:
        await self.state.audit.open()
        try:
            await self.state.sampler.refresh()
        except Exception as exc:  # the API still starts; numbers fill in later
            event(log, "ADM-110", "statistics refresh failed", reason=type(exc).__name__,
                  level=logging.WARNING)
        self._sampler_task = asyncio.create_task(self.state.sampler.run(), name="admin:stats")
        app = build_app(self.state)
        app.middlewares.append(self._body_deadline)  # innermost: after authentication
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0, **runner_options(self.conf))
        await self._runner.setup()
        ssl_ctx = self.conf.tls.server_context() if self.conf.tls is not None else None
        self._listener = LimitedListener(self._runner, self.conf, "admin")
        await self._listener.start(self.host, self.port, ssl_ctx)
        assert self._listener.address is not None
        host, port = self._listener.address
        self.address = (host, port)
        self.state.public_base = self.conf.public_url or listener_url(
            host, port, self.conf.tls is not None)
        event(log, "ADM-101", "admin listening", address=f"{host}:{port}",
              tls=self.conf.tls is not None)

    @web.middleware
    async def _body_deadline(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Handle a request; 408 (and close) if its body arrives too slowly.

        The deadline holds only until the body is complete: a handler that reads its body
        first is cancelled only while it is still waiting for bytes.
        """
        try:
            return await read_within(handler(request), request.content, self.conf)
        except BodyTimeout as exc:
            event(log, "ADM-603", "request body too slow", peer=request.remote,
                  level=logging.WARNING)
            return web.Response(status=408, text=str(exc), headers={"Connection": "close"})

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._sampler_task is not None:
            self._sampler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler_task
            self._sampler_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.state.audit.close()
        event(log, "ADM-102", "admin stopped")
