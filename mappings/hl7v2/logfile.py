"""Reading message logs for replay: CR/LF files and HL7 batches (MLLP-framed files are
unwrapped first by ``channels.mllp.logfile``, which owns the framing).

* HL7 batch (FHS/BHS ... BTS/FTS): the envelope segments are dropped and every
  MSH starts a new message.
* Plain: segments separated by CR, LF or CRLF, blank lines allowed; every
  MSH starts a new message.
"""

from __future__ import annotations

from collections.abc import Iterator

from mappings.hl7v2.text import normalise

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_plain(data: bytes) -> Iterator[bytes]:
    """Yield each message of an unframed log or batch, with ``\\r`` segment terminators."""
    current: list[bytes] = []
    for seg in normalise(data).split(b"\r"):
        if not seg.strip() or seg[:3] in _ENVELOPE:
            continue
        if seg.startswith(b"MSH") and current:
            yield b"\r".join(current)
            current = []
        current.append(seg)
    if current:
        yield b"\r".join(current)


def is_batch(payload: bytes) -> bool:
    """True if one payload holds an HL7 batch or several messages."""
    return payload.lstrip()[:3] in (b"FHS", b"BHS") or payload.count(b"MSH") > 1
