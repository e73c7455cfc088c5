"""Repairs an order message needs before it can be mapped: an ORC glued onto the segment
before it.

Some senders lose a segment terminator, so the ORC sits inside the line before it (the PID,
the PV1...): ``PV1|1|E|ED^B1^01|ORC|NW|PL1|...`` (the segment before ended with an empty
field) or ``PV1|1|E|ED^B1^01ORC|NW|PL1|...`` (the id glued onto its last value). The OBR after
it is intact, and so is the ORC's own text from its id on; what cannot be known is where
the segment before it really ended. So the ORC is read as its own segment from its id on,
the segment before keeps the fields up to it, and the note says which fields of that segment
were not read as its own (a value the id was glued onto is read without the id).

Only an order that would otherwise have no ORC is repaired: the first OBR has no ORC before
it, and the glued id is followed by an order control code (two capital letters, HL7 table
0119: NW, CA, XO ...), so a value that merely says "ORC" is never split.
"""

from __future__ import annotations

import re

from mappings.hl7v2.reader import Message, Segment

_ORDER_CONTROL = re.compile(r"[A-Z]{2}")


def unglue_orc(msg: Message) -> str | None:
    """Split an ORC glued onto the segment before it out of *msg* (in place); the note saying
    what was done, or None when there was nothing to repair. Never raises."""
    segments = msg.segments()
    ids = [seg.id for seg in segments]
    if "OBR" not in ids or "ORC" in ids[: ids.index("OBR")]:
        return None
    for seg in segments[1 : ids.index("OBR")]:
        at = _glue_point(seg.text.split(msg.fs))
        if at is not None:
            return _split(msg, seg, at)
    return None


def _glue_point(fields: list[str]) -> int | None:
    """The index of the field holding a glued ORC id (``ORC`` or ``...ORC``), or None."""
    for i in range(1, len(fields) - 1):
        if fields[i].endswith("ORC") and _ORDER_CONTROL.fullmatch(fields[i + 1]):
            return i
    return None


def _split(msg: Message, seg: Segment, at: int) -> str:
    """Cut *seg* before field *at* and add the ORC it carried after it; the note."""
    fields = seg.text.split(msg.fs)
    glued_onto = fields[at][:-3]
    host = fields[:at] + ([glued_onto] if glued_onto else [])
    orc = msg.fs.join(["ORC", *fields[at + 1 :]])
    seg.store(host, msg.fs)
    msg.add_segment(orc, after=seg)
    name = f"{seg.id}-{at}"
    where = (f"{name} ended in the ORC's id and was read without it; {seg.id} fields after "
             f"{name}" if glued_onto else f"{seg.id} fields from {name} on")
    return (f"an ORC segment was glued onto {seg.id} (a segment terminator lost): read as its "
            f"own segment; {where} were the ORC's and were not read as {seg.id} fields")
