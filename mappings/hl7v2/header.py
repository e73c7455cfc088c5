"""Fast, lenient MSH reading for the ACK path.

The ACK path must answer in microseconds, so it never runs a full parser: it
reads the delimiters, the MSH fields the ACK policy needs and the routing key,
and checks that every segment at least looks like one. Full parsing happens
later, from the durable queue.
"""

from __future__ import annotations

import hashlib
import operator
import re
from typing import NamedTuple

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

_SEGMENT_ID = re.compile(rb"[A-Z][A-Z0-9]{2}")
_HEAD = operator.itemgetter(slice(0, 4))
# Per field separator, the segment heads (id + separator: "PID|", "OBR|", ...) seen valid, so
# that most messages are checked with one set operation. Bounded per separator.
_VALID_HEADS: dict[bytes, set[bytes]] = {}
_MAX_VALID_HEADS = 1024


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


class Header(NamedTuple):
    """What the ACK policy and the router need from a message.

    Immutable. A named tuple rather than a frozen dataclass: it is built for every message on
    the ACK path, and a frozen dataclass costs several times more to construct.
    """

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
    patient_id: str  # the routing key: PID-3's first repetition's id, else PID-2's ("" if none)
    # What lenient reading repaired (a stray line break joined back, ...); stored as flags.
    flags: tuple[str, ...] = ()
    # MSH-10 as sent, where control_id is not it (generated for an empty MSH-10): MSA-2
    # echoes what the sender sent, so that it can match the ACK to its message.
    sent_control_id: str | None = None

    @property
    def their_control_id(self) -> str:
        """The sender's MSH-10, as sent: what MSA-2 of the ACK echoes."""
        return self.control_id if self.sent_control_id is None else self.sent_control_id

    @property
    def component_sep(self) -> str:
        return self.encoding[0] if self.encoding else "^"

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack or self.app_ack)


# One MLLP frame carries one message and one ACK answers it (MSA-2 names one MSH-10). An HL7
# batch (FHS/BHS) is split before the header is read (`mappings.hl7v2.batch`, called by the
# answerer's `unbatch`) and answered as a batch; a batch reaching here whole (the kept head of
# an oversized frame) and messages concatenated without a batch envelope are refused (AR).
_BATCH_HEADS = (b"FHS", b"BHS")
BATCH_REASON = ("an HL7 batch (FHS/BHS) in one MLLP frame is not accepted: "
                "send one message per frame")
MANY_REASON = "more than one MSH segment in one MLLP frame: send one message per frame"
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark (Windows-made files) before MSH
# A line that carries control bytes is a broken segment, not a field a stray line break split.
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_MSH_FIELDS = 18  # the highest MSH field read here (MSH-18)
_TRIM = b"\r\n\t "


def _segments(raw: bytes) -> tuple[bytes, list[bytes]]:
    """``normalise(raw)`` and its segments; skips the blank-line pass when there is no blank line.

    Once the ends are trimmed, an empty segment can only come from a blank line, so splitting
    first and looking for an empty one is cheaper than searching the bytes for ``\\r\\r``.
    """
    text = raw.strip(_TRIM) if b"\n" not in raw else normalise(raw)
    segments = text.split(b"\r")
    if b"" in segments:
        text = normalise(text)
        segments = text.split(b"\r")
    return text, segments


def parse_header(raw: bytes, *, generate_control_id: bool = False) -> Header:
    """Read the header of one message; raise ``HeaderError`` with the reason.

    Accepts any segment terminator and custom delimiters; checks only what is
    needed to route and acknowledge. Lenient as real feeds need it: a UTF-8 byte-order mark
    before ``MSH`` is skipped, and a line that is not a segment (a stray line break inside a
    field) is read as part of the segment before it and named in ``Header.flags``. With
    *generate_control_id*, an empty MSH-10 is taken: ``control_id`` is :func:`generated_id`
    of the message, flagged, and the ACK echoes the empty MSH-10 as sent.
    """
    if raw[:3] == _BOM:
        raw = raw[3:]
    text, segments = _segments(raw)
    if text[:3] in _BATCH_HEADS:
        raise HeaderError(BATCH_REASON, SEGMENT_SEQUENCE_ERROR, f"{text[:3].decode()}^1")
    if not text.startswith(b"MSH") or len(text) < 8:
        raise HeaderError("message does not start with an MSH segment", SEGMENT_SEQUENCE_ERROR,
                          "MSH^1")
    fs = text[3:4]
    sep = fs.decode("latin-1")
    fields = _msh_fields(segments[0].decode("latin-1"), sep)
    header = _header(sep, fields, _patient_id(text, fs, fields[1]), generate_control_id)
    if not header.control_id:
        generated = generated_id(text)
        header = header._replace(
            control_id=generated, sent_control_id="",
            flags=(f"MSH-10 was empty: control id {generated} generated",))
    second = text.find(b"\rMSH" + fs)
    if second >= 0:
        seq = text.count(b"\r", 0, second) + 2
        raise HeaderError(MANY_REASON, SEGMENT_SEQUENCE_ERROR, f"MSH^{seq}", header)
    joined = _check_segments(segments, fs, header)
    if joined:
        rejoined = b"\r".join(segments)
        header = header._replace(patient_id=_patient_id(rejoined, fs, fields[1]),
                                 flags=header.flags + tuple(joined))
    return header


def _msh_fields(msh: str, fs: str) -> list[str]:
    """MSH split into fields, padded to MSH-18, with MSH-2 checked."""
    # "MSH|^~\\&|APP|..." splits into ["MSH", MSH-2, MSH-3, ...]: MSH-n is fields[n-1].
    fields = msh.split(fs)
    if len(fields) < _MSH_FIELDS:
        fields += [""] * (_MSH_FIELDS - len(fields))
    encoding = fields[1]
    if len(encoding) < 4 or fs in encoding or (fs.isascii() and fs.isalnum()):
        raise HeaderError(f"MSH-2 encoding characters {encoding!r} are invalid", DATA_TYPE_ERROR,
                          "MSH^1^2")
    return fields


def generated_id(text: bytes) -> str:
    """The control id taken for a message sent with an empty MSH-10: ``G`` and 19 hex digits of
    the SHA-256 of its normalised text (20 characters, MSH-10's length before v2.7).

    Deterministic, so a resend of the same bytes gets the same id and the duplicate window
    sees it; two messages differing in any byte (MSH-7 at least) get different ids.
    """
    return "G" + hashlib.sha256(text).hexdigest()[:19].upper()


def _header(fs: str, fields: list[str], patient_id: str, empty_id_ok: bool = False) -> Header:
    """Check the MSH fields routing needs and build the header (MSH-10 may be empty if
    *empty_id_ok*)."""
    encoding = fields[1]
    comp = encoding[0]
    message_type = _message_type(fields[8], comp)
    control_id = fields[9].strip()
    if not control_id and not empty_id_ok:
        raise HeaderError("MSH-10 message control id is empty", REQUIRED_FIELD_MISSING, "MSH^1^10")
    version = fields[11].partition(comp)[0].strip()
    if not version:
        raise HeaderError("MSH-12 version id is empty", REQUIRED_FIELD_MISSING, "MSH^1^12")
    return Header(
        fs, encoding,
        fields[2].partition(comp)[0].strip(),  # sending application
        fields[3].partition(comp)[0].strip(),  # sending facility
        fields[4].partition(comp)[0].strip(),  # receiving application
        fields[5].partition(comp)[0].strip(),  # receiving facility
        message_type, control_id,
        fields[10].partition(comp)[0].strip() or "P",  # processing id
        version,
        fields[14].strip().upper(),  # MSH-15 accept acknowledgement type
        fields[15].strip().upper(),  # MSH-16 application acknowledgement type
        fields[17].partition(encoding[1])[0].strip(),  # MSH-18 character set
        patient_id,
    )


def _message_type(msh9: str, comp: str) -> str:
    parts = msh9.split(comp, 2)
    kind = parts[0].strip()
    if not kind:
        raise HeaderError("MSH-9 message type is empty", REQUIRED_FIELD_MISSING, "MSH^1^9")
    event = parts[1].strip() if len(parts) > 1 else ""
    if not event:
        # ACKs may carry only the type; everything else needs its trigger event.
        return kind.upper()
    return f"{kind.upper()}^{event.upper()}"


def _check_segments(segments: list[bytes], fs: bytes, header: Header) -> list[str]:
    """Every segment must be a three-character id followed by the field separator (or nothing).

    A line that is not a segment and does not look like one (:func:`_stray`) is a field a stray
    line break split: it is joined onto the segment before it, in *segments*, and named in the
    flags returned. Any other bad segment raises ``HeaderError`` (answered AE).
    """
    # Fast path, all in C: every segment starts with an id + separator already seen valid.
    valid = _VALID_HEADS.get(fs)
    if valid is not None and valid.issuperset(map(_HEAD, segments)):
        return []
    valid = _VALID_HEADS.setdefault(fs, set())
    flags: list[str] = []
    seq = 1
    for line, seg in enumerate(list(segments), start=1):
        if (seg[3:4] == fs or len(seg) == 3) and _SEGMENT_ID.match(seg, 0, 3):
            if len(seg) > 3 and len(valid) < _MAX_VALID_HEADS:
                valid.add(seg[:4])
            seq += 1
            continue
        if seq > 1 and _stray(seg, fs):
            segments[seq - 2] += b" " + seg
            del segments[seq - 1]
            prev = segments[seq - 2][:3].decode("latin-1")
            flags.append(f"line {line} is not a segment: joined onto {prev} as a line break "
                         "inside a field")
            continue
        seg_id = seg[:3]
        shown = seg[:8].decode("latin-1", "replace")
        raise HeaderError(f"segment {seq} ({shown!r}) is not a valid HL7 segment",
                          SEGMENT_SEQUENCE_ERROR, f"{seg_id.decode('latin-1', 'replace')}^{seq}",
                          header)
    return flags


def _stray(line: bytes, fs: bytes) -> bool:
    """A line a stray line break cut from a field: text that does not look like a segment.

    Looking like a segment, with a bad id (``pv1|``, ``P_1|``, a bare ``abc``), or carrying
    control bytes, it is a broken segment and keeps its AE.
    """
    head = line[:3]
    if (len(line) == 3 or line[3:4] == fs) and b" " not in head and fs not in head:
        return False
    return not _CONTROL.search(line)


def _patient_id(text: bytes, fs: bytes, encoding: str) -> str:
    """The routing key of the first PID segment: the id (first component) of PID-3's first
    repetition, else of PID-2's, the field the orders mapping falls back to when a sender
    leaves PID-3 empty (``FieldMap.patient_identifiers``); "" if both are empty."""
    start = text.find(b"\rPID" + fs)  # segment 1 is MSH, so a PID segment follows a terminator
    if start < 0:
        return ""
    end = text.find(b"\r", start + 1)
    pid = text[start + 1:end if end >= 0 else len(text)].split(fs, 4)
    for field in pid[3:4] + pid[2:3]:  # PID-3, then PID-2
        found = field.decode("latin-1").partition(encoding[1])[0].partition(encoding[0])[0]
        if found.strip():
            return found.strip()
    return ""
