"""What changed between two versions of one HL7 v2 message, field by field.

``radbridge try`` shows each step's effect with it, ``radbridge replay --diff`` what a
destination would get now against what it got; the engine reaches it through the registry
(the ``message_diff`` view), since it knows no HL7.

Segments are paired by id and occurrence (the second OBX before with the second OBX after);
a segment with no partner was added or removed, and a paired segment whose place among the
others changed was moved (``NTE[1]``: ``after OBR`` → ``after OBX[8]``). Segments of one id
reordered among themselves (OBX rows) pair by occurrence, so they read as changed fields.
In a paired segment each field that differs is split into repetitions, components and
subcomponents only as far as the two differ, so
a change reads at the finest path that names it: ``PID-5.1: "DOE" → "SMITH"``,
``PID-3[2].5: "SS" → "MR"``. A segment id that occurs more than once in either message is
named with its occurrence (``OBX[2]-5``), like the paths of :mod:`mappings.hl7v2.readpath`.
Values are compared as sent and shown as meant (escapes undone).

For viewers (*masked*), every value of a field not on the allow-list
(:data:`mappings.hl7v2.phi.HL7_CLEAR`) reads ``***``, in added and removed segments too.
Content that is not HL7 (a JSON alert, a FHIR Bundle) is compared line by line; binary
content (a DICOM SR) only by size.
"""

from __future__ import annotations

import difflib
from typing import Any

from engine.admin.phi import MASK
from engine.registry import register_view
from mappings.hl7v2.phi import hl7_field_is_phi
from mappings.hl7v2.reader import HEADER_SEGMENTS, Message, Segment, parse
from mappings.hl7v2.view import decode_layer, looks_like_hl7, mask_text

Change = dict[str, Any]  # {"path", "kind", "before", "after"}
CHANGED, ADDED, REMOVED, MOVED = "changed", "segment added", "segment removed", "segment moved"


def _change(path: str, kind: str, before: str | None, after: str | None) -> Change:
    return {"path": path, "kind": kind, "before": before, "after": after}


def _labels(msg: Message, counts: dict[str, int]) -> list[str]:
    """Each segment's name in a path: its id, with its occurrence where the id repeats."""
    seen: dict[str, int] = {}
    out = []
    for seg in msg:
        seen[seg.id] = seen.get(seg.id, 0) + 1
        out.append(f"{seg.id}[{seen[seg.id]}]" if counts.get(seg.id, 0) > 1 else seg.id)
    return out


def _counts(*msgs: Message) -> dict[str, int]:
    counts: dict[str, int] = {}
    for msg in msgs:
        mine: dict[str, int] = {}
        for seg in msg:
            mine[seg.id] = mine.get(seg.id, 0) + 1
        for seg_id, n in mine.items():
            counts[seg_id] = max(counts.get(seg_id, 0), n)
    return counts


def _split(value: str, sep: str) -> list[str]:
    return value.split(sep) if sep else [value]


def _parts(a: str, b: str, seps: list[str], path: str, out: list[tuple[str, str, str]],
           level: int = 0) -> None:
    """(path, before, after) for each differing part: split by repetition, component and
    subcomponent (*seps*, from *level* on) while either side has more than one part."""
    if a == b:
        return
    for depth in range(level, len(seps)):
        pa, pb = _split(a, seps[depth]), _split(b, seps[depth])
        if len(pa) == 1 and len(pb) == 1:
            continue  # nothing to split at this depth: look one deeper
        # a subcomponent reached without a component split is in component 1
        mark = "[{}]" if depth == 0 else ".1.{}" if depth == 2 and level < 2 else ".{}"
        for i in range(max(len(pa), len(pb))):
            x = pa[i] if i < len(pa) else ""
            y = pb[i] if i < len(pb) else ""
            _parts(x, y, seps, path + mark.format(i + 1), out, depth + 1)
        return
    out.append((path, a, b))


def _field_changes(a: Message, b: Message, sa: Segment, sb: Segment, label: str,
                   masked: bool) -> list[Change]:
    fa, fb = sa.fields(a.fs), sb.fields(b.fs)
    out: list[Change] = []
    for n in range(1, max(len(fa), len(fb))):
        x = fa[n] if n < len(fa) else ""
        y = fb[n] if n < len(fb) else ""
        if x == y:
            continue
        whole = sa.id in HEADER_SEGMENTS and n <= 2
        seps = [] if whole else [b.rep, b.comp, b.sub]
        found: list[tuple[str, str, str]] = []
        _parts(x, y, seps, f"{label}-{n}", found)
        hide = masked and hl7_field_is_phi(sb.id, n)
        for path, before, after in found:
            before, after = a.unescape(before), b.unescape(after)
            if hide:
                before, after = _mask(before), _mask(after)
            out.append(_change(path, CHANGED, before, after))
    return out


def _mask(value: str) -> str:
    return MASK if value else value


def _segment_text(seg: Segment, masked: bool) -> str:
    return mask_text(seg.text) if masked else seg.text


def _keys(msg: Message) -> list[tuple[str, int]]:
    """Each segment as (id, occurrence): how segments are paired."""
    seen: dict[str, int] = {}
    out = []
    for seg in msg:
        seen[seg.id] = seen.get(seg.id, 0) + 1
        out.append((seg.id, seen[seg.id]))
    return out


def _places(msg: Message, counts: dict[str, int]) -> dict[tuple[str, int], str]:
    """Where each segment stands: ``after <the segment before it>``, or ``first``."""
    labels = _labels(msg, counts)
    return {key: f"after {labels[i - 1]}" if i else "first"
            for i, key in enumerate(_keys(msg))}


def _moves(before: Message, after: Message, counts: dict[str, int]) -> list[Change]:
    """The paired segments whose order among the paired ones changed (the fewest that
    explain it: the longest run kept in order is not moved) and whose neighbour before them
    changed with it, in the order of *after*."""
    kb, ka = _keys(before), _keys(after)
    both = set(kb) & set(ka)
    sb, sa = [k for k in kb if k in both], [k for k in ka if k in both]
    if sb == sa:
        return []
    moved: set[tuple[str, int]] = set()
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, sb, sa,
                                                     autojunk=False).get_opcodes():
        if tag != "equal":
            moved.update(sa[j1:j2])
    was, now = _places(before, counts), _places(after, counts)
    return [_change(label, MOVED, was[key], now[key])
            for key, label in zip(ka, _labels(after, counts), strict=True)
            if key in moved and was[key] != now[key]]  # a run moved whole: its head


def hl7_diff(before: Message, after: Message, masked: bool = False) -> list[Change]:
    """The changes from *before* to *after*: paired segments field by field, in the order of
    *after*, then the segments that moved, then the segments *before* had that *after*
    lacks."""
    counts = _counts(before, after)
    pairs: dict[tuple[str, int], Segment] = {}
    seen: dict[str, int] = {}
    for seg in before:
        seen[seg.id] = seen.get(seg.id, 0) + 1
        pairs[(seg.id, seen[seg.id])] = seg
    out: list[Change] = []
    seen = {}
    for seg, label in zip(after, _labels(after, counts), strict=True):
        seen[seg.id] = seen.get(seg.id, 0) + 1
        old = pairs.pop((seg.id, seen[seg.id]), None)
        if old is None:
            out.append(_change(label, ADDED, None, _segment_text(seg, masked)))
        else:
            out += _field_changes(before, after, old, seg, label, masked)
    out += _moves(before, after, counts)
    labels = dict(zip(map(id, before), _labels(before, counts), strict=True))
    for old in pairs.values():
        out.append(_change(labels[id(old)], REMOVED, _segment_text(old, masked), None))
    return out


def _text_diff(before: bytes, after: bytes, masked: bool) -> list[Change]:
    """Line by line for text (JSON, XML); by size for binary content."""
    if before == after:
        return []
    try:
        a, b = before.decode("utf-8"), after.decode("utf-8")
    except UnicodeDecodeError:
        return [_change("(content)", CHANGED, f"{len(before)} bytes", f"{len(after)} bytes")]
    out = []
    la, lb = a.splitlines(), b.splitlines()
    matcher = difflib.SequenceMatcher(None, la, lb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old, new = "\n".join(la[i1:i2]), "\n".join(lb[j1:j2])
        if masked:
            old, new = _mask(old), _mask(new)
        out.append(_change(f"line {j1 + 1}", CHANGED, old if i2 > i1 else None,
                           new if j2 > j1 else None))
    return out


@register_view("message_diff")
def message_diff(before: bytes, after: bytes, masked: bool = False) -> list[Change]:
    """What changed from *before* to *after* (HL7 field by field, other content by line):
    ``[{"path", "kind", "before", "after"}]``, empty when they are the same. Raises nothing."""
    if before == after:
        return []
    if looks_like_hl7(decode_layer(before)) and looks_like_hl7(decode_layer(after)):
        return hl7_diff(parse(before), parse(after), masked)
    return _text_diff(before, after, masked)
