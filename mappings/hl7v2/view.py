"""Content layers as the message viewer shows them: HL7 segment by segment, with field names.

Lenient like the rest of the engine: any segment terminator, any field separator
(read from MSH-1), unknown and Z-segments listed with unnamed fields. Values are
shown as sent (components joined by ``^``, escapes untouched). For viewers, every field
not on the allow-list (``mappings.hl7v2.phi.HL7_CLEAR``) and the id of any line that is not
a well-formed segment are replaced before anything leaves the server, in the table and in
the text alike; non-HL7 content is withheld whole. The admin calls ``render_layer``
through the registry (the ``message_layer`` view).
"""

from __future__ import annotations

import re
from typing import Any

from engine.admin.phi import MASK
from engine.registry import register_view
from mappings.hl7v2.fields import field_name
from mappings.hl7v2.phi import hl7_field_is_phi
from mappings.hl7v2.text import decode

_HEADERS = ("MSH", "FHS", "BHS")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def looks_like_hl7(text: str) -> bool:
    return text[:3] in _HEADERS and len(text) > 8


def _charset(text: str, sep: str) -> str | None:
    parts = text.split("\r", 1)[0].split(sep)
    return parts[17] if len(parts) > 17 else None


def decode_layer(data: bytes) -> str:
    """Bytes -> text, honouring MSH-18 when the content is HL7."""
    text = decode(data)
    if looks_like_hl7(text):
        charset = _charset(text, text[3])
        if charset:
            text = decode(data, charset)
    return text


def _lines(text: str) -> list[str]:
    """Segments of *text*, whatever terminated them (blank lines dropped)."""
    return [line for line in re.split(r"\r\n|\r|\n", text.strip("\r\n\t ")) if line]


def _fields(seg_id: str, parts: list[str], sep: str) -> list[tuple[int, str]]:
    """(field number, value) pairs; MSH-1 is the separator itself, MSH-2 the encoding chars."""
    if seg_id in _HEADERS:
        return [(1, sep)] + [(i + 1, v) for i, v in enumerate(parts[1:], start=1)]
    return [(i, v) for i, v in enumerate(parts[1:], start=1)]


def _segment_id(first: str, masked: bool) -> str:
    """The id shown for a line: a bad one (a name, a stray value) is masked for viewers."""
    if masked:
        return first if _SEGMENT_ID.fullmatch(first) else MASK
    return first[:3] if _SEGMENT_ID.match(first[:3]) else first[:16]


def parse_segments(text: str, masked: bool = False) -> list[dict[str, Any]]:
    """Every segment with its non-empty fields: ``{"id", "fields": [{"n", "name", "value"}]}``."""
    sep = text[3] if looks_like_hl7(text) else "|"
    out = []
    for line in _lines(text):
        parts = line.split(sep)
        seg_id = _segment_id(parts[0], masked)
        fields = []
        for n, value in _fields(seg_id, parts, sep):
            if value == "":
                continue
            if masked and hl7_field_is_phi(seg_id, n):
                value = MASK
            fields.append({"n": n, "name": field_name(seg_id, n) or "", "value": value})
        out.append({"id": seg_id, "fields": fields})
    return out


def mask_text(text: str) -> str:
    """The HL7 text with every field not allowed replaced (structure and positions kept)."""
    sep = text[3]
    lines = []
    for line in _lines(text):
        parts = line.split(sep)
        seg_id = parts[0] = _segment_id(parts[0], masked=True)
        offset = 1 if seg_id in _HEADERS else 0  # MSH-2 sits at parts[1]
        for i in range(1, len(parts)):
            n = i + offset
            if parts[i] and not (seg_id in _HEADERS and n <= 2) and hl7_field_is_phi(seg_id, n):
                parts[i] = MASK
        lines.append(sep.join(parts))
    return "\r".join(lines)


@register_view("message_layer")
def render_layer(name: str, data: bytes, masked: bool) -> dict[str, Any]:
    """One content layer for the API: its text (masked when asked) and, for HL7, segments."""
    text = decode_layer(data)
    layer: dict[str, Any] = {"name": name, "size": len(data), "masked": masked}
    if looks_like_hl7(text):
        layer["format"] = "hl7"
        layer["segments"] = parse_segments(text, masked)
        layer["text"] = mask_text(text) if masked else "\r".join(_lines(text))
    else:
        layer["format"] = "json" if text.lstrip()[:1] in ("{", "[") else "text"
        layer["segments"] = None
        layer["text"] = f"[withheld: {len(data)} bytes]" if masked else text
    return layer
