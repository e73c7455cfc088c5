"""Fast, lenient MSH reading for the ACK path.

The ACK path must answer in microseconds, so it never runs a full parser: it
reads the delimiters, the MSH fields the ACK policy needs and the routing key,
and checks that every segment at least looks like one. Full parsing happens
later, from the durable queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mappings.hl7v2.text import normalise

# HL7 table 0357 (message error condition codes) used in ERR segments.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_VERSION = 203
DUPLICATE_KEY = 205
APPLICATION_INTERNAL_ERROR = 207

ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_VERSION: "Unsupported version id",
    DUPLICATE_KEY: "Duplicate key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

_SEGMENT_ID = re.compile(rb"^[A-Z][A-Z0-9]{2}$")


class HeaderError(ValueError):
    """The message cannot be read far enough to be routed.

    ``code`` is an HL7 table 0357 code, ``location`` an ERR-2 style location
    such as ``MSH^1^10`` (segment, sequence, field).
    """

    def __init__(self, reason: str, code: int, location: str = "",
                 header: Header | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.location = location
        self.header = header  # set when MSH was readable but the body was not


@dataclass(slots=True, frozen=True)
class Header:
    """What the ACK policy and the router need from a message."""

    field_sep: str
    encoding: str  # MSH-2 as sent: component, repetition, escape, subcomponent[, truncation]
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    message_type: str  # normalised "TYPE^EVENT", e.g. "ORM^O01"
    control_id: str
    processing_id: str
    version: str
    accept_ack: str  # MSH-15: "" (original mode), AL, NE, ER, SU
    app_ack: str  # MSH-16
    charset: str  # MSH-18
    patient_id: str  # PID-3, first repetition, first component ("" if absent)

    @property
    def component_sep(self) -> str:
        return self.encoding[0] if self.encoding else "^"

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack or self.app_ack)


def _field(fields: list[bytes], n: int) -> str:
    """MSH-n for n >= 2 (MSH-1 is the field separator itself)."""
    idx = n - 1
    return fields[idx].decode("latin-1") if idx < len(fields) else ""


def parse_header(raw: bytes) -> Header:
    """Read the header of one message; raise ``HeaderError`` with the reason.

    Accepts any segment terminator and custom delimiters; checks only what is
    needed to route and acknowledge.
    """
    text = normalise(raw)
    if not text.startswith(b"MSH") or len(text) < 8:
        raise HeaderError("message does not start with an MSH segment", SEGMENT_SEQUENCE_ERROR,
                          "MSH^1")
    fs = text[3:4]
    segments = text.split(b"\r")
    msh = segments[0]
    # "MSH|^~\\&|APP|..." splits into ["MSH", MSH-2, MSH-3, ...]: MSH-n is fields[n-1].
    fields = msh.split(fs)
    encoding = _field(fields, 2)
    if len(encoding) < 4 or fs.decode("latin-1") in encoding or fs.isalnum():
        raise HeaderError(f"MSH-2 encoding characters {encoding!r} are invalid", DATA_TYPE_ERROR,
                          "MSH^1^2")
    comp = encoding[0].encode("latin-1")
    rep = encoding[1].encode("latin-1")
    message_type = _message_type(fields, comp)
    control_id = _field(fields, 10).strip()
    if not control_id:
        raise HeaderError("MSH-10 message control id is empty", REQUIRED_FIELD_MISSING, "MSH^1^10")
    version = _field(fields, 12).split(encoding[0])[0].strip()
    if not version:
        raise HeaderError("MSH-12 version id is empty", REQUIRED_FIELD_MISSING, "MSH^1^12")
    header = Header(
        field_sep=fs.decode("latin-1"),
        encoding=encoding,
        sending_app=_first(fields, 3, comp),
        sending_facility=_first(fields, 4, comp),
        receiving_app=_first(fields, 5, comp),
        receiving_facility=_first(fields, 6, comp),
        message_type=message_type,
        control_id=control_id,
        processing_id=_first(fields, 11, comp) or "P",
        version=version,
        accept_ack=_field(fields, 15).strip().upper(),
        app_ack=_field(fields, 16).strip().upper(),
        charset=_field(fields, 18).split(encoding[1])[0].strip(),
        patient_id=_patient_id(segments, fs, comp, rep),
    )
    try:
        _check_segments(segments, fs)
    except HeaderError as exc:
        exc.header = header
        raise
    return header


def _first(fields: list[bytes], n: int, comp: bytes) -> str:
    idx = n - 1
    if idx >= len(fields):
        return ""
    return fields[idx].split(comp, 1)[0].decode("latin-1").strip()


def _message_type(fields: list[bytes], comp: bytes) -> str:
    msh9 = fields[8] if len(fields) > 8 else b""
    parts = [p.decode("latin-1").strip() for p in msh9.split(comp)]
    if not parts or not parts[0]:
        raise HeaderError("MSH-9 message type is empty", REQUIRED_FIELD_MISSING, "MSH^1^9")
    if len(parts) < 2 or not parts[1]:
        # ACKs may carry only the type; everything else needs its trigger event.
        return parts[0].upper()
    return f"{parts[0].upper()}^{parts[1].upper()}"


def _check_segments(segments: list[bytes], fs: bytes) -> None:
    for seq, seg in enumerate(segments, start=1):
        seg_id = seg[:3]
        if not _SEGMENT_ID.match(seg_id) or (len(seg) > 3 and seg[3:4] != fs):
            shown = seg[:8].decode("latin-1", "replace")
            raise HeaderError(f"segment {seq} ({shown!r}) is not a valid HL7 segment",
                              SEGMENT_SEQUENCE_ERROR, f"{seg_id.decode('latin-1', 'replace')}^{seq}")


def _patient_id(segments: list[bytes], fs: bytes, comp: bytes, rep: bytes) -> str:
    for seg in segments:
        if seg.startswith(b"PID" + fs):
            pid = seg.split(fs)
            if len(pid) > 3:
                first = pid[3].split(rep, 1)[0].split(comp, 1)[0]
                return first.decode("latin-1").strip()
            return ""
    return ""
