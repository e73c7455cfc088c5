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
* **Connections** beyond ``max_connections``, or beyond ``max_connections_per_peer`` from
  one address, are answered ``503`` with ``Connection: close`` at once; the ones already open
  are untouched. A connection from an address outside ``allow`` is closed at once, unanswered
  (``LimitedListener``, ``engine.peers``).
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

from engine.logs import event
from engine.peers import LIMIT, NOT_ALLOWED, IPAddress, PeerGate, PeerLimitsConfig, peer_ip

log = logging.getLogger("radbridge.http")
T = TypeVar("T")
LINGER_MAX_SECS = 2.0
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
         b"Content-Type: text/plain\r\nContent-Length: 29\r\n\r\ntoo many connections, retry.\n")


class HTTPLimitsConfig(PeerLimitsConfig):
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


class _Gated(asyncio.Protocol):
    """One accepted connection: refused by the listener's ``PeerGate``, or served by aiohttp.

    The gate needs the peer's address, which a protocol factory does not see, so each
    connection starts here: ``connection_made`` asks the gate, then either refuses (503 and
    close, or close at once for an address outside ``allow``) or hands the transport to an
    aiohttp protocol and forwards every later event to it. Only ``write``, ``close``,
    ``abort`` and ``get_extra_info`` are used on the transport: any event loop's transport
    (asyncio's, uvloop's, TLS) serves.
    """

    __slots__ = ("listener", "inner", "ip")

    def __init__(self, listener: LimitedListener) -> None:
        self.listener = listener
        self.inner: asyncio.Protocol | None = None
        self.ip: IPAddress | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        self.ip = peer_ip(peername)
        refused = self.listener.gate.admit(self.ip)
        if refused is not None:
            self.listener.refuse(transport, peername, refused)
            return
        server = self.listener.runner.server
        if server is None:  # the runner was cleaned up while this connection was accepted
            self.listener.gate.release(self.ip)
            transport.close()
            return
        self.inner = server()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            self.listener.gate.release(self.ip)
            inner.connection_lost(exc)


class LimitedListener:
    """Serve an aiohttp runner on one socket with a ``PeerGate`` in front (see ``_Gated``).

    The runner's ``web.Server`` is the protocol factory (aiohttp's low-level server API) of
    the connections the gate admits. Connections in a TLS handshake are not yet counted (the
    handshake has its own timeout). Refusals are logged as HTTP-104 (``max_connections``),
    HTTP-105 (address not in ``allow``) and HTTP-106 (``max_connections_per_peer``).
    """

    def __init__(self, runner: web.BaseRunner, limits: HTTPLimitsConfig, name: str) -> None:
        self.runner, self.limits, self.name = runner, limits, name
        self.gate = PeerGate(limits.max_connections, limits)
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
        assert self.runner.server is not None, "runner.setup() first"
        handshake = self.limits.header_timeout_secs if ssl_context is not None else None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gated(self), host, port, ssl=ssl_context, reuse_address=True,
            backlog=1024, ssl_handshake_timeout=handshake)

    def refuse(self, transport: asyncio.BaseTransport, peername: Any, reason: str) -> None:
        """Answer a refused connection: 503 for a limit, nothing for an address not allowed."""
        self.refused += 1
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else "?"
        if reason == NOT_ALLOWED:
            event(log, "HTTP-105", "connection refused: address not allowed", listener=self.name,
                  peer=peer, level=logging.WARNING)
            _abort(transport)
            return
        if reason == LIMIT:
            event(log, "HTTP-104", "connection refused: limit reached", listener=self.name,
                  peer=peer, limit=self.limits.max_connections, level=logging.WARNING)
        else:
            event(log, "HTTP-106", "connection refused: per-peer limit reached",
                  listener=self.name, peer=peer, limit=self.limits.max_connections_per_peer,
                  level=logging.WARNING)
        _busy(transport)

    async def stop(self) -> None:
        """Stop accepting; the runner's cleanup then closes the open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()


def _busy(transport: asyncio.BaseTransport) -> None:
    """Write the 503 and close: duck-typed, uvloop's transports are no asyncio subclasses."""
    write = getattr(transport, "write", None)
    if write is not None:
        write(_BUSY)
    transport.close()


def _abort(transport: asyncio.BaseTransport) -> None:
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()
