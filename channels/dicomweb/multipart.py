"""A streaming multipart/related reader, bounded in size, lenient in what it accepts.

aiohttp's reader refuses boundaries longer than RFC 2046's 70 characters,
and Orthanc's DICOMweb plugin sends 73; real STOW-RS clients also vary in
line endings around headers. This reader accepts boundaries up to 200
characters and CRLF or bare LF around part headers, keeps at most one part
(plus one network chunk) in memory, and counts every byte of the body
against ``max_bytes``. Part bodies are found with ``bytes.find`` on a
buffer that is scanned once, so large parts cost linear time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

MAX_BOUNDARY = 200
MAX_HEADER_BYTES = 16 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024


class MalformedMultipart(ValueError):
    """The body is not a well-formed multipart body; the message says where."""


class BodyTooLarge(Exception):
    """More than ``max_bytes`` arrived."""


class ByteStream(Protocol):
    async def readany(self) -> bytes: ...


class RelatedReader:
    """Yields ``(headers, body)`` per part; header names are lower-case."""

    def __init__(self, stream: ByteStream, boundary: str, max_bytes: int) -> None:
        if not boundary or len(boundary) > MAX_BOUNDARY:
            raise MalformedMultipart(f"boundary must have 1 to {MAX_BOUNDARY} characters")
        if not all(" " <= c <= "~" for c in boundary):  # RFC 2046 bchars are ASCII
            raise MalformedMultipart("boundary must be printable ASCII")
        self.stream = stream
        self.dash = b"--" + boundary.encode("ascii")
        self.max_bytes = max_bytes
        self.received = 0
        self.buf = bytearray()
        self.eof = False

    async def _fill(self) -> None:
        if self.eof:
            raise MalformedMultipart("body ends before the closing boundary")
        chunk = await self.stream.readany()
        if not chunk:
            self.eof = True
            return
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise BodyTooLarge()
        self.buf += chunk

    async def _find(self, needle: bytes, limit: int | None, what: str) -> int:
        """Index of *needle* in the buffer, reading more as needed (each byte scanned once)."""
        start = 0
        while (at := self.buf.find(needle, start)) < 0:
            if limit is not None and len(self.buf) > limit:
                raise MalformedMultipart(f"{what} not found within {limit} bytes")
            start = max(0, len(self.buf) - len(needle) + 1)
            await self._fill()
        return at

    async def _need(self, count: int) -> None:
        while len(self.buf) < count:
            await self._fill()

    async def parts(self) -> AsyncIterator[tuple[dict[str, str], bytes]]:
        at = await self._find(self.dash, MAX_PREAMBLE_BYTES, "opening boundary")
        del self.buf[:at + len(self.dash)]
        while True:
            await self._need(2)
            if self.buf[:2] == b"--":
                return  # closing delimiter; the epilogue is ignored
            end = await self._find(b"\n", MAX_HEADER_BYTES, "end of the boundary line")
            if self.buf[:end].strip():
                raise MalformedMultipart("unexpected bytes after a boundary")
            del self.buf[:end + 1]
            headers = await self._headers()
            at = await self._find(b"\r\n" + self.dash, None, "boundary after a part")
            body = bytes(self.buf[:at])
            del self.buf[:at + 2 + len(self.dash)]
            yield headers, body

    async def _headers(self) -> dict[str, str]:
        await self._need(2)
        for blank in (b"\r\n", b"\n"):  # a part without headers
            if self.buf.startswith(blank):
                del self.buf[:len(blank)]
                return {}
        # Only the first MAX_HEADER_BYTES may hold the blank line: never scan the part's body
        # (and whatever else is buffered) for it, once per part.
        window = MAX_HEADER_BYTES + 4
        while not (hits := [(at, len(sep)) for sep in (b"\r\n\r\n", b"\n\n")
                            if (at := self.buf.find(sep, 0, window)) >= 0]):
            if len(self.buf) > MAX_HEADER_BYTES:
                raise MalformedMultipart(f"part headers longer than {MAX_HEADER_BYTES} bytes")
            await self._fill()
        end, skip = min(hits)
        lines = bytes(self.buf[:end]).decode("latin-1").splitlines()
        del self.buf[:end + skip]
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise MalformedMultipart("a part header line has no colon")
            headers[name.strip().lower()] = value.strip()
        return headers
