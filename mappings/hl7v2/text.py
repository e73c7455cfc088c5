"""Byte-level normalisation shared by every HL7 v2 reader.

Real senders terminate segments with ``\\r``, ``\\n`` or ``\\r\\n``; python-hl7 and
hl7apy both want ``\\r``. Everything that parses normalises here first.
"""

from __future__ import annotations

import re

_BLANK_SEGMENTS = re.compile(rb"\r{2,}")


def normalise(raw: bytes) -> bytes:
    """Return *raw* with every segment terminated by a single ``\\r``.

    Blank lines are dropped, surrounding whitespace (but not a trailing field
    separator) is trimmed, and the result never ends in a terminator.
    """
    # Plain byte checks first: this runs on the ACK path for every message.
    if b"\n" in raw:
        raw = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    if b"\r\r" in raw:
        raw = _BLANK_SEGMENTS.sub(b"\r", raw)
    return raw.strip(b"\r\n\t ")


def decode(raw: bytes, charset: str | None = None) -> str:
    """Decode message bytes using MSH-18 when known.

    Unknown or absent charsets fall back to cp1252, then latin-1, which never
    fails: lenient in, and the raw bytes are always kept unchanged in the store.
    """
    for enc in _encodings_for(charset):
        try:
            return raw.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("latin-1")


_HL7_CHARSETS = {
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "ISO IR100": "latin-1",
}


def _encodings_for(charset: str | None) -> list[str]:
    preferred = _HL7_CHARSETS.get((charset or "").strip().upper())
    chain = ["utf-8", "cp1252"]
    return [preferred, *chain] if preferred else chain
