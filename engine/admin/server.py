"""The admin listener's lifecycle, owned by the Engine: built before anything opens (so weak
credentials stop the start early), started last, stopped first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.admin.app import build_app
from engine.admin.audit import AuditLog
from engine.admin.auth import Directory, check_credentials
from engine.admin.http import AdminState
from engine.admin.sessions import LoginThrottle, SessionStore
from engine.admin.stats import Sampler
from engine.admin.views import StoreViews
from engine.configbase import parse_hostport
from engine.httplimits import BodyTimeout, LimitedListener, read_within, runner_options
from engine.logs import event

log = logging.getLogger("radbridge.admin")


class AdminServer:
    """Admin API, dashboard, /metrics, /health and /ready on one HTTP(S) listener."""

    def __init__(self, engine: Any, conf: Any, directory: Directory | None = None) -> None:
        """Load credentials (from the environment unless given) and check them.

        Raises ``AdminCredentialsError`` when the listener is not on loopback and the
        admin credentials are missing, empty or a default.
        """
        self.engine = engine
        self.conf = conf
        self.host, self.port = parse_hostport(conf.listen, "127.0.0.1")
        self.directory = directory if directory is not None else Directory.from_env()
        for problem in check_credentials(self.directory, self.host):
            event(log, "ADM-601", "weak admin credentials (loopback only)", problem=problem,
                  level=logging.WARNING)
        audit_path = conf.audit_path or str(Path(engine.config.engine.data_dir) / "audit.db")
        views = StoreViews(engine.store)
        self.state = AdminState(
            engine=engine, conf=conf, directory=self.directory,
            sessions=SessionStore(conf.session_idle_secs, conf.session_max_secs),
            throttle=LoginThrottle(), audit=AuditLog(audit_path),
            sampler=Sampler(engine, views, conf.stats_interval_secs), views=views,
            secure_cookies=conf.tls is not None)
        self._runner: web.AppRunner | None = None
        self._listener: LimitedListener | None = None
        self._sampler_task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None

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
