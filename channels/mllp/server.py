"""The MLLP listener: asyncio protocol per connection, replies in arrival order.

The sink (the engine) answers each frame through a callback once the message
is durable (a batch frame may be answered with several frames, written together);
replies are written in the order the frames arrived, whatever order the callbacks
run in. A connection with too many unanswered frames stops reading until it
catches up, so memory stays bounded.

Slow or greedy peers are bounded too: a frame (or TLS handshake) must complete within
``frame_timeout_secs`` of its start byte, a connection with no frame started or answered for
``idle_timeout_secs`` is closed (bytes outside frames do not keep it open), and connections
beyond ``max_connections``, beyond ``max_connections_per_peer`` from one address, or from an
address outside ``allow`` are closed at once while the others carry on (``engine.peers``).

Memory: each connection holds at most one unfinished frame (``max_message_bytes``), and all
of a listener's unfinished frames together at most ``max_buffer_bytes`` (plus one read and a
4 KiB head per connection). The connection whose read takes the total over the budget has
its unfinished frame shed: its head is kept, the rest discarded as it arrives, and once its
end arrives it is stored as ERROR and answered AR 207 ("resend later"), like an oversized
frame. Complete frames are never shed; they are answered as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

from channels.mllp.config import MLLPSourceConfig
from channels.mllp.framing import Frame, MLLPFramer, frame
from engine.config.base import parse_hostport
from engine.connectors import RawSink
from engine.logs import event
from engine.peers import LIMIT, NOT_ALLOWED, IPAddress, PeerGate, peer_ip
from engine.registry import register

log = logging.getLogger("radbridge.mllp")
_MAX_PENDING = 256
_PENDING = object()


class _Connection(asyncio.Protocol):
    def __init__(self, server: MLLPServer) -> None:
        self.server = server
        self.framer = MLLPFramer(server.config.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.replies: deque[list[object]] = deque()
        self.paused = False
        self.peer = "?"
        self.ip: IPAddress | None = None
        self.admitted = False
        self.last_active = 0.0
        self.frame_started: float | None = None  # loop time of the unfinished frame's start

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.last_active = self.server.loop.time()
        self.ip = peer_ip(peer)
        refused = self.server.gate.admit(self.ip)
        if refused is not None:
            self.server.refuse(self.peer, refused)
            self.transport.abort()
            return
        self.admitted = True
        self.server.connections.add(self)
        event(log, "MLLP-101", "connection opened", channel=self.server.channel, peer=self.peer,
              level=logging.DEBUG)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.garbage_bytes += self.framer.garbage_bytes
        self.server.buffered -= self.framer.held
        if self.admitted:
            self.admitted = False
            self.server.gate.release(self.ip)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        held = self.framer.held
        events = self.framer.feed(data)
        self._time_frames(bool(events))
        self._keep_budget(held)
        for ev in events:
            slot: list[object] = [_PENDING]
            self.replies.append(slot)
            reply = self._replier(slot)
            if isinstance(ev, Frame):
                self.server.sink.receive(ev.payload, reply, self.peer)
            elif ev.shed:
                self.server.sink.over_budget(ev.head, ev.size, reply, self.peer)
            else:
                self.server.sink.oversized(ev.head, ev.size, reply, self.peer)
        if len(self.replies) > _MAX_PENDING and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()

    def _keep_budget(self, held_before: int) -> None:
        """Account this read's change to the listener's buffered bytes; shed if over budget."""
        server = self.server
        server.buffered += self.framer.held - held_before
        if server.buffered > server.config.max_buffer_bytes and self.framer.in_frame:
            held = self.framer.held
            if self.framer.shed():
                server.buffered += self.framer.held - held
                server.shed += 1
                event(log, "MLLP-106", "buffer budget exceeded, frame shed (answered AR)",
                      channel=server.channel, peer=self.peer,
                      budget=server.config.max_buffer_bytes, level=logging.WARNING)

    def _time_frames(self, completed: bool) -> None:
        """Note when the unfinished frame began; frames, not stray bytes, count as activity."""
        now = self.server.loop.time()
        if self.framer.in_frame:
            if completed or self.frame_started is None:
                self.frame_started = self.last_active = now
        else:
            self.frame_started = None
            if completed:
                self.last_active = now

    def _replier(self, slot: list[object]):  # type: ignore[no-untyped-def]
        def reply(response: bytes | None) -> None:
            slot[0] = response
            self._flush()

        return reply

    def _flush(self) -> None:
        out = []
        while self.replies and self.replies[0][0] is not _PENDING:
            response = self.replies.popleft()[0]
            if isinstance(response, tuple):  # several answers to one frame (a batch), in order
                out += [frame(r) for r in response]
            elif response is not None:
                out.append(frame(response))  # type: ignore[arg-type]
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))
        if self.paused and len(self.replies) < _MAX_PENDING // 2 and self.transport:
            self.paused = False
            self.transport.resume_reading()


@register("source", "mllp", MLLPSourceConfig, "HL7 v2 over MLLP/TCP (TLS and mutual TLS)")
class MLLPServer:
    """One listening socket for one channel."""

    def __init__(self, channel: str, config: MLLPSourceConfig, sink: RawSink) -> None:
        self.channel = channel
        self.config = config
        self.sink = sink
        self.connections: set[_Connection] = set()
        self.gate = PeerGate(config.max_connections, config)
        self.garbage_bytes = 0
        self.buffered = 0  # bytes of unfinished frames held by all connections
        self.shed = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.loop = asyncio.get_event_loop()

    def refuse(self, peer: str, reason: str) -> None:
        """Log a connection refused by the gate (its address only: nothing was read)."""
        if reason == NOT_ALLOWED:
            event(log, "MLLP-107", "connection refused: address not allowed",
                  channel=self.channel, peer=peer, level=logging.WARNING)
        elif reason == LIMIT:
            event(log, "MLLP-104", "connection refused: limit reached", channel=self.channel,
                  peer=peer, limit=self.config.max_connections, level=logging.WARNING)
        else:
            event(log, "MLLP-108", "connection refused: per-peer limit reached",
                  channel=self.channel, peer=peer,
                  limit=self.config.max_connections_per_peer, level=logging.WARNING)

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        host, port = parse_hostport(self.config.listen)
        ssl_ctx = self.config.tls.server_context() if self.config.tls else None
        handshake = self.config.frame_timeout_secs if ssl_ctx is not None else None
        self._server = await self.loop.create_server(lambda: _Connection(self), host, port,
                                                     ssl=ssl_ctx, reuse_address=True,
                                                     backlog=1024,
                                                     ssl_handshake_timeout=handshake)
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close idle connections and those whose frame is taking too long."""
        idle, slow = self.config.idle_timeout_secs, self.config.frame_timeout_secs
        while True:
            await asyncio.sleep(min(1.0, idle / 4, slow / 4))
            now = self.loop.time()
            for conn in list(self.connections):
                if conn.transport is None or conn.transport.is_closing():
                    continue
                if conn.frame_started is not None and not conn.paused \
                        and now - conn.frame_started > slow:
                    event(log, "MLLP-105", "frame not completed in time, connection closed",
                          channel=self.channel, peer=conn.peer, buffered=conn.framer.buffered,
                          level=logging.WARNING)
                    conn.transport.close()
                elif conn.frame_started is None and not conn.replies \
                        and now - conn.last_active > idle:
                    event(log, "MLLP-103", "idle connection closed", channel=self.channel,
                          peer=conn.peer, level=logging.DEBUG)
                    conn.transport.close()

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                if conn.transport:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
