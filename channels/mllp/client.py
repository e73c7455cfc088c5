"""One persistent MLLP connection: send a frame, wait for the answering frame."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from channels.mllp.framing import Frame, MLLPFramer, frame
from engine.errors import PeerTimeout, PeerUnavailable


class MLLPClient:
    """A client for one peer. ``send`` reconnects if the connection was lost.

    Raises ``PeerUnavailable`` (cannot connect, connection lost) and
    ``PeerTimeout`` (no answer in time); the connection is dropped after
    either, so the next ``send`` starts clean.
    """

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 connect_timeout: float = 10.0, ack_timeout: float = 30.0,
                 max_message_bytes: int = 16 * 1024 * 1024) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.max_message_bytes = max_message_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = MLLPFramer(max_message_bytes)
        self._ready: list[bytes] = []

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl_context,
                                        server_hostname=self.host if self.ssl_context else None),
                self.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise PeerUnavailable(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        self._framer = MLLPFramer(self.max_message_bytes)
        self._ready.clear()

    async def send(self, payload: bytes) -> bytes:
        if not self.connected:
            await self.connect()
        assert self._writer is not None
        try:
            self._writer.write(frame(payload))
            await self._writer.drain()
        except (OSError, ssl.SSLError) as exc:
            await self.close()
            raise PeerUnavailable(f"connection to {self.host}:{self.port} lost: {exc!r}") from exc
        return await self._answer()

    async def receive(self) -> bytes:
        """The next frame from the peer: a further answer to the frame last sent (a batch
        answered with one ACK frame per message). Raises as ``send`` does."""
        if self._reader is None:
            raise PeerUnavailable(f"not connected to {self.host}:{self.port}")
        return await self._answer()

    async def _answer(self) -> bytes:
        """The next frame within ``ack_timeout``; the connection closed on failure. Raises
        ``PeerTimeout`` or ``PeerUnavailable``."""
        try:  # a timeout scope, not wait_for: no task per answer on the send path
            async with asyncio.timeout(self.ack_timeout):
                return await self._read_frame()
        except TimeoutError as exc:
            await self.close()
            raise PeerTimeout(f"no answer from {self.host}:{self.port} in "
                              f"{self.ack_timeout}s") from exc
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise PeerUnavailable(f"connection to {self.host}:{self.port} lost: {exc!r}") from exc

    async def _read_frame(self) -> bytes:
        assert self._reader is not None
        while not self._ready:
            data = await self._reader.read(65536)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            for ev in self._framer.feed(data):
                if isinstance(ev, Frame):
                    self._ready.append(ev.payload)
        return self._ready.pop(0)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
