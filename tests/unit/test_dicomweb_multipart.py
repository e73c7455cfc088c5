"""The STOW-RS multipart reader: part headers are looked for only where they may be."""

from __future__ import annotations

import pytest

from channels.dicomweb.multipart import MAX_HEADER_BYTES, MalformedMultipart, RelatedReader


class Chunks:
    """A body handed over in one piece (what a fast client's socket buffer gives)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def readany(self) -> bytes:
        body, self.body = self.body, b""
        return body


async def read(body: bytes) -> list[tuple[dict[str, str], bytes]]:
    return [p async for p in RelatedReader(Chunks(body), "b", 1 << 24).parts()]


async def test_parts_with_crlf_or_bare_lf_headers_are_read_from_one_buffer() -> None:
    body = (b"--b\r\nContent-Type: application/dicom\r\n\r\nONE\n\nSTILL ONE\r\n"
            b"--b\nContent-Type: application/dicom\n\nTWO\r\n--b--\r\n")
    assert await read(body) == [({"content-type": "application/dicom"}, b"ONE\n\nSTILL ONE"),
                                ({"content-type": "application/dicom"}, b"TWO")]


async def test_headers_longer_than_the_limit_are_refused_though_a_blank_line_follows() -> None:
    long = b"X-Pad: " + b"a" * MAX_HEADER_BYTES
    body = b"--b\r\n" + long + b"\r\n\r\nDATA\r\n--b--\r\n"
    with pytest.raises(MalformedMultipart, match="part headers longer than"):
        await read(body)
