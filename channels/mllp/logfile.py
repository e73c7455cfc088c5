"""Reading message logs for replay: MLLP-framed files, CR/LF files, HL7 batches.

* MLLP-framed: the file starts with ``<VT>``; frames are taken as they are (a frame holding
  a batch is split like a batch file).
* HL7 batch and plain files: split by ``mappings.hl7v2.logfile``.
"""

from __future__ import annotations

from collections.abc import Iterator

from channels.mllp.framing import START, Frame, MLLPFramer
from mappings.hl7v2.logfile import is_batch, split_plain


def split_messages(data: bytes) -> Iterator[bytes]:
    """Yield each message in *data* with ``\\r`` segment terminators."""
    if not data.lstrip(b"\r\n\t ").startswith(START):
        yield from split_plain(data)
        return
    framer = MLLPFramer(max_size=max(len(data), 1024))
    for ev in framer.feed(data):
        if isinstance(ev, Frame):
            yield from split_messages(ev.payload) if is_batch(ev.payload) else [ev.payload]
