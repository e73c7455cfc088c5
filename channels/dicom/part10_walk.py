"""Walk a Part 10 byte string element by element, to its last byte, without decoding values.

pydicom reads a truncated file silently (a short last value, or elements
missing at the end), and reads data encoded otherwise than its transfer
syntax declares by guessing. ``walk_part10`` checks the framing instead: the
file meta group, then every element of the data set in the declared
encoding, recursing into undefined-length sequences and items and
encapsulated pixel data. It raises ``Broken`` naming what is wrong:

* a value or element header cut short ("truncated: (300A,00B0) needs ..."),
* a sequence or item without its delimiter,
* data encoded implicit VR under an explicit transfer syntax, or the reverse
  (tried only once the declared encoding fails, so the answer names the cause),
* a deflated data set that does not inflate to its end.

An intact walk returns a ``Layout``: the encoding and where the top-level
pixel data is. Cost is one pass over element headers; values are skipped by
length. A file cut exactly between two top-level elements cannot be told
from a complete one: the caller checks that an image still has its pixels.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
MAX_INFLATED_BYTES = 512 * 1024**2
MAX_DEPTH = 32

_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
    b"TM UC UI UL UN UR US UT UV".split()
)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xE000, 0xE00D, 0xE0DD
PIXEL_TAGS = frozenset({(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)})


class Broken(ValueError):
    """The bytes are not a well-framed Part 10 file; ``reason`` says where (no values)."""

    def __init__(self, reason: str, mismatch: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mismatch = mismatch  # encoded otherwise than the transfer syntax declares


@dataclass(slots=True)
class Layout:
    """What an intact walk found."""

    transfer_syntax: str
    pixel_tag: tuple[int, int] | None = None
    pixel_length: int | None = None  # None: absent or undefined (encapsulated)


@dataclass(slots=True)
class _Enc:
    implicit: bool
    little: bool

    @property
    def end(self) -> str:
        return "<" if self.little else ">"


def _tag(tag: tuple[int, int]) -> str:
    return f"({tag[0]:04X},{tag[1]:04X})"


def walk_part10(data: bytes) -> Layout:
    """The ``Layout`` of *data*, or ``Broken`` naming what is wrong with its framing."""
    if data[128:132] != b"DICM":
        raise Broken("not a DICOM Part 10 file (no DICM prefix)")
    pos, syntax = _file_meta(data, 132)
    if not syntax:
        raise Broken("no transfer syntax in the file meta information")
    enc = _Enc(syntax == IMPLICIT_LE, syntax != EXPLICIT_BE)
    body = _inflate(data[pos:]) if syntax in DEFLATED else memoryview(data)[pos:]
    layout = Layout(syntax)
    try:
        _elements(body, 0, len(body), enc, 0, layout)
    except Broken as exc:
        raise _mismatch(body, enc) or exc from None
    return layout


def _file_meta(data: bytes, pos: int) -> tuple[int, str]:
    """Walk group 0002 (always explicit VR little endian); return (end, transfer syntax)."""
    syntax = ""
    enc = _Enc(False, True)
    while pos + 4 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        tag, start, length, _ = _header(data, pos, len(data), enc)
        if length == _UNDEFINED or start + length > len(data):
            raise Broken("file meta information is truncated")
        if tag == (0x0002, 0x0010):
            syntax = bytes(data[start : start + length]).decode("ascii", "replace").strip("\0 ")
        pos = start + length
    if pos == 132:
        raise Broken("no file meta information")
    return pos, syntax


def _inflate(raw: memoryview | bytes) -> memoryview:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(bytes(raw), MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise Broken("deflated data set does not inflate") from exc
    if inflater.unconsumed_tail:
        raise Broken(f"deflated data set inflates to over {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise Broken("deflated data set is truncated")
    return memoryview(out)


def _header(
    buf: bytes | memoryview, pos: int, end: int, enc: _Enc
) -> tuple[tuple[int, int], int, int, bytes | None]:
    """(tag, value start, length, VR or None) of the element at *pos*."""
    if pos + 8 > end:
        raise Broken(f"truncated inside an element header at byte {pos}")
    group, elem = struct.unpack_from(f"{enc.end}HH", buf, pos)
    if enc.implicit or group == 0xFFFE:
        return (group, elem), pos + 8, struct.unpack_from(f"{enc.end}I", buf, pos + 4)[0], None
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr not in _VRS:
        raise Broken(f"element {_tag((group, elem))} has no valid VR")
    if vr in _LONG_VRS:
        if pos + 12 > end:
            raise Broken(f"truncated inside the header of {_tag((group, elem))}")
        return (group, elem), pos + 12, struct.unpack_from(f"{enc.end}I", buf, pos + 8)[0], vr
    return (group, elem), pos + 8, struct.unpack_from(f"{enc.end}H", buf, pos + 6)[0], vr


def _elements(
    buf: bytes | memoryview,
    pos: int,
    end: int,
    enc: _Enc,
    depth: int,
    layout: Layout | None = None,
    in_item: bool = False,
) -> int:
    """Walk elements from *pos*; return where they end (after the item delimiter if *in_item*)."""
    while pos < end:
        if layout is not None and end - pos < 8 and not any(buf[pos:end]):
            return end  # a few zero bytes of trailing padding
        tag, start, size, vr = _header(buf, pos, end, enc)
        length: int | None = size  # None below: undefined length (the pixel layout says so)
        if tag[0] == 0xFFFE:
            if in_item and tag[1] == _ITEM_END:
                return start
            raise Broken(f"unexpected delimiter {_tag(tag)} at byte {pos}")
        if length == _UNDEFINED:
            sub = _Enc(True, True) if vr == b"UN" else enc  # UN of undefined length: PS3.5 6.2.2
            pos = _items(buf, start, end, sub, depth + 1, tag)
            length = None
        elif start + size > end:
            raise Broken(f"truncated: {_tag(tag)} needs {size} bytes, {end - start} left")
        else:
            pos = start + size
        if layout is not None and tag in PIXEL_TAGS:
            layout.pixel_tag, layout.pixel_length = tag, length
    if in_item:
        raise Broken("truncated: an item has no end delimiter")
    return pos


def _items(
    buf: bytes | memoryview, pos: int, end: int, enc: _Enc, depth: int, owner: tuple[int, int]
) -> int:
    """Walk the items of an undefined-length element to its sequence delimiter."""
    if depth > MAX_DEPTH:
        raise Broken(f"sequences nested deeper than {MAX_DEPTH}")
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from(f"{enc.end}HHI", buf, pos)
        if (group, elem) == (0xFFFE, _SEQ_END):
            return pos + 8
        if (group, elem) != (0xFFFE, _ITEM):
            raise Broken(f"{_tag(owner)} holds {_tag((group, elem))} where an item belongs")
        if length == _UNDEFINED:
            pos = _elements(buf, pos + 8, end, enc, depth, in_item=True)
        elif pos + 8 + length > end:
            raise Broken(f"truncated: an item of {_tag(owner)} needs {length} bytes")
        else:
            pos += 8 + length
    raise Broken(f"truncated: {_tag(owner)} has no end delimiter")


def _mismatch(body: bytes | memoryview, declared: _Enc) -> Broken | None:
    """A ``Broken`` naming an explicit/implicit VR mismatch, if the other encoding walks clean."""
    other = _Enc(not declared.implicit, declared.little)
    try:
        _elements(body, 0, len(body), other, 0, Layout(""))
    except Broken:
        return None
    found, said = ("implicit", "explicit") if other.implicit else ("explicit", "implicit")
    return Broken(f"encoded {found} VR but transfer syntax says {said} VR", mismatch=True)
