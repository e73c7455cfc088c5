"""Slow and greedy HTTP clients: limits shared by the aiohttp listeners (STOW-RS, admin API).

aiohttp's server has no header timeout, body timeout or connection limit of its own, so a
client that sends one byte a second (slowloris) or opens thousands of connections would hold
them for ever. Three limits close that:

* **Headers** must arrive within ``header_timeout_secs`` of the connection opening or of the
  previous answer. This is aiohttp's ``keepalive_timeout``: its timer starts at connect and
  after each response and is not pushed back by arriving bytes, and it closes a connection
  whose handler is still waiting for a complete request, so it bounds slow headers and idle
  keep-alive connections alike.
* **Bodies** must arrive within ``body_timeout_secs`` plus one second per
  ``body_min_bytes_per_sec`` bytes received (Apache ``mod_reqtimeout``'s MinRate): a large
  upload at a sane rate is never cut, a drip is. ``read_within`` enforces it; the caller
  answers 408 and the connection closes after a short drain (``runner_options``).
* **Connections** beyond ``max_connections`` are answered ``503`` with ``Connection: close``
  at once; the ones already open are untouched (``LimitedListener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import StreamReader, web
from pydantic import Field

from engine.configbase import Strict
from engine.logs import event

log = logging.getLogger("radbridge.http")
T = TypeVar("T")
LINGER_MAX_SECS = 2.0
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
         b"Content-Type: text/plain\r\nContent-Length: 29\r\n\r\ntoo many connections, retry.\n")


class HTTPLimitsConfig(Strict):
    """Limits of an HTTP listener against slow or greedy clients (see engine.httplimits)."""

    header_timeout_secs: float = Field(
        30, gt=0, description="Request headers must arrive within this long of the connection "
                              "opening or the previous answer; also closes idle keep-alive "
                              "connections.")
    body_timeout_secs: float = Field(
        60, gt=0, description="A request body must arrive within this long, plus one second per "
                              "body_min_bytes_per_sec bytes received; else 408 and close.")
    body_min_bytes_per_sec: int = Field(
        65536, ge=1, description="The slowest upload rate that earns more time (see "
                                 "body_timeout_secs).")
    max_connections: int = Field(
        256, ge=1, description="Further connections are answered 503 and closed at once.")


class BodyTimeout(Exception):
    """The request body did not arrive in time (answer 408 and close the connection)."""


def runner_options(limits: HTTPLimitsConfig) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` that apply the header timeout.

    After an answer sent before the body was read (408, 413, 401...), aiohttp drains the rest
    of the body so the client sees the answer rather than a reset; that drain is capped at
    ``min(2 s, body_timeout_secs)`` so a drip cannot stretch it.
    """
    return {"keepalive_timeout": limits.header_timeout_secs,
            "lingering_time": min(LINGER_MAX_SECS, limits.body_timeout_secs)}


async def read_within(work: Awaitable[T], content: StreamReader, limits: HTTPLimitsConfig) -> T:
    """Await *work* (which reads *content*), cancelling it if the body arrives too slowly.

    The deadline is checked until the body is complete; after that *work* (e.g. storing what
    was read) runs without one. Raises ``BodyTimeout`` after cancelling *work*.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    start = loop.time()
    while not task.done() and not content.is_eof():
        allowed = start + limits.body_timeout_secs \
            + content.total_bytes / limits.body_min_bytes_per_sec
        remaining = allowed - loop.time()
        if remaining <= 0:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise BodyTimeout(f"request body too slow: {content.total_bytes} bytes in "
                              f"{loop.time() - start:.0f} s")
        await asyncio.wait({task}, timeout=min(remaining, 1.0))
    return await task


class _Busy(asyncio.Protocol):
    """The protocol of a connection over the limit: a 503, then close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass


class LimitedListener:
    """Serve an aiohttp runner on one socket, answering 503 beyond ``max_connections``.

    The runner's ``web.Server`` is the protocol factory (aiohttp's low-level server API); this
    asks it for a protocol only while fewer than ``max_connections`` are open. Connections in
    a TLS handshake are not yet counted (the handshake has its own timeout).
    """

    def __init__(self, runner: web.BaseRunner, limits: HTTPLimitsConfig, name: str) -> None:
        self.runner, self.limits, self.name = runner, limits, name
        self.refused = 0
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        """Bind and listen; raises ``OSError`` if the address cannot be bound."""
        handshake = self.limits.header_timeout_secs if ssl_context is not None else None
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, host, port, ssl=ssl_context, reuse_address=True, backlog=1024,
            ssl_handshake_timeout=handshake)

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self.runner.server
        assert server is not None, "runner.setup() first"
        if len(server.connections) >= self.limits.max_connections:
            self.refused += 1
            event(log, "HTTP-104", "connection refused: limit reached", listener=self.name,
                  limit=self.limits.max_connections, level=logging.WARNING)
            return _Busy()
        return server()

    async def stop(self) -> None:
        """Stop accepting; the runner's cleanup then closes the open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
