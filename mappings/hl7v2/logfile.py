"""Reading message logs for replay: MLLP-framed files, CR/LF files, HL7 batches.

* MLLP-framed: the file starts with ``<VT>``; frames are taken as they are.
* HL7 batch (FHS/BHS ... BTS/FTS): the envelope segments are dropped and every
  MSH starts a new message.
* Plain: segments separated by CR, LF or CRLF, blank lines allowed; every
  MSH starts a new message.
"""

from __future__ import annotations

from collections.abc import Iterator

from channels.mllp.framing import START, Frame, MLLPFramer
from mappings.hl7v2.text import normalise

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_messages(data: bytes) -> Iterator[bytes]:
    """Yield each message in *data* with ``\\r`` segment terminators."""
    if data.lstrip(b"\r\n\t ").startswith(START):
        framer = MLLPFramer(max_size=max(len(data), 1024))
        for ev in framer.feed(data):
            if isinstance(ev, Frame):
                yield from split_messages(ev.payload) if _is_batch(ev.payload) else [ev.payload]
        return
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


def _is_batch(payload: bytes) -> bool:
    return payload.lstrip()[:3] in (b"FHS", b"BHS") or payload.count(b"MSH") > 1
