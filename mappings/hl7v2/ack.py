"""ACK / NAK building (original and enhanced mode).

Every NAK carries its reason: MSA-1 AE/AR (or CE/CR), MSA-2 the sender's
MSH-10, MSA-3 the text, and an ERR segment with the table 0357 code and the
location. The ACK is written with the sender's own delimiters.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import time
from dataclasses import dataclass

from mappings.hl7v2.header import ERROR_TEXT, Header

_counter = itertools.count(1)
_PREFIX = "RB" + os.urandom(3).hex().upper()


def next_control_id() -> str:
    """A unique control id, at most 20 characters (the v2.3 limit of MSH-10)."""
    return f"{_PREFIX}{next(_counter):012d}"


@dataclass(slots=True, frozen=True)
class AckSpec:
    """What to answer: ``code`` is AA/AE/AR (original), mapped to CA/CE/CR in enhanced mode."""

    code: str
    text: str = ""
    error_code: int | None = None
    location: str = ""


_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


def ack_code_for(header: Header | None, code: str) -> str | None:
    """The MSA-1 to send for an original-mode *code*, or None if MSH-15 asks for no ACK."""
    if header is None or not header.enhanced:
        return code
    enhanced = _ENHANCED[code]
    mode = header.accept_ack or "AL"
    if mode == "NE" or (mode == "ER" and code == "AA") or (mode == "SU" and code != "AA"):
        return None
    return enhanced


def escape(text: str, header: Header | None) -> str:
    """Escape delimiters in free text with HL7 escape sequences."""
    fs = header.field_sep if header else "|"
    enc = header.encoding if header else "^~\\&"
    esc = enc[2] if len(enc) > 2 else "\\"
    if not _needs_escape(fs, enc).search(text):
        return text  # the usual case: nothing to escape
    out = text.replace(esc, f"{esc}E{esc}")
    sub = enc[3] if len(enc) > 3 else "&"
    for ch, name in ((fs, "F"), (enc[0], "S"), (enc[1], "R"), (sub, "T")):
        out = out.replace(ch, f"{esc}{name}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


@functools.lru_cache(maxsize=256)
def _needs_escape(fs: str, enc: str) -> re.Pattern[str]:
    """Matches any character ``escape`` would change, for one set of delimiters."""
    chars = {fs, enc[0], enc[1], enc[2] if len(enc) > 2 else "\\", enc[3] if len(enc) > 3 else "&",
             "\r", "\n"}
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]")


def build_ack(
    header: Header | None,
    spec: AckSpec,
    *,
    app: str = "RADBRIDGE",
    facility: str = "",
    control_id: str | None = None,
    now: float | None = None,
) -> bytes | None:
    """Build the ACK for *header* (None when the MSH itself was unreadable).

    Returns None when the sender asked for no accept acknowledgement (MSH-15).
    """
    code = ack_code_for(header, spec.code)
    if code is None:
        return None
    fs = header.field_sep if header else "|"
    head, type_part, tail = _msh_parts(header, app, facility)
    msh = f"{head}{_timestamp(now)}{type_part}{control_id or next_control_id()}{tail}"
    their_id = escape(header.their_control_id, header) if header else ""
    text = escape(spec.text, header) if spec.text else ""
    # MSA-2 is required: kept as a field even when the sender's MSH-10 was empty.
    segments = [msh, fs.join(["MSA", code, their_id, text] if text else ["MSA", code, their_id])]
    if spec.error_code is not None:
        version = header.version if header else "2.5.1"
        enc = header.encoding[:4] if header else "^~\\&"
        segments.append(_err_segment(header, spec, fs, enc, version))
    return ("\r".join(segments) + "\r").encode("latin-1", "replace")


FALLBACK_REASON = "the answer could not be built; resend later or contact the receiver"


def fallback_ack(header: Header | None, code: str, *, app: str = "RADBRIDGE") -> bytes:
    """A minimal ACK that cannot fail, for when ``build_ack`` raised.

    Default delimiters, our own MSH, MSA-1 *code* (AA/AE/AR, original mode) and MSA-2 the
    sender's control id (escaped); a NAK adds a generic MSA-3 and an ERR 207. Nothing of the
    sender's header but its control id is echoed.
    """
    their_id = escape(header.their_control_id, None) if header is not None else ""
    app_id = escape(app, None)
    msh = "|".join(["MSH", "^~\\&", app_id, "", "", "", _timestamp(None), "", "ACK",
                    next_control_id(), "P", "2.5.1"])
    if code == "AA":  # stored and accepted: a plain AA (a NAK would bring a duplicate resend)
        return ("\r".join([msh, f"MSA|AA|{their_id}"]) + "\r").encode("latin-1", "replace")
    segments = [msh, "|".join(["MSA", code, their_id, FALLBACK_REASON])]
    segments.append(f"ERR||MSH^1|207^{ERROR_TEXT[207]}^HL70357|E||||{FALLBACK_REASON}")
    return ("\r".join(segments) + "\r").encode("latin-1", "replace")


# The ACK's MSH split around its two varying fields (MSH-7 time, MSH-10 control id), per sender
# and message shape: most ACKs are then a few string joins.
_MSH_CACHE: dict[tuple[str, ...], tuple[str, str, str]] = {}
_MSH_CACHE_MAX = 1024
_last_ts: tuple[int, str] = (-1, "")


def _msh_parts(header: Header | None, app: str, facility: str) -> tuple[str, str, str]:
    """(MSH up to MSH-7, MSH-8..9 up to MSH-10, MSH-11..12) of the ACK for *header*."""
    if header is None:
        key: tuple[str, ...] = (app, facility)
    else:
        key = (app, facility, header.field_sep, header.encoding, header.sending_app,
               header.sending_facility, header.message_type, header.processing_id, header.version)
    parts = _MSH_CACHE.get(key)
    if parts is None:
        if len(_MSH_CACHE) >= _MSH_CACHE_MAX:
            _MSH_CACHE.clear()
        parts = _MSH_CACHE[key] = _make_msh_parts(header, app, facility)
    return parts


def _make_msh_parts(header: Header | None, app: str, facility: str) -> tuple[str, str, str]:
    """Build what ``_msh_parts`` caches (the sender's delimiters, our app, their app back)."""
    fs = header.field_sep if header else "|"
    enc = header.encoding[:4] if header else "^~\\&"
    comp = enc[0]
    trigger = header.message_type.split("^")[1] if header and "^" in header.message_type else ""
    head = fs.join(["MSH", enc, app, facility, header.sending_app if header else "",
                    header.sending_facility if header else "", ""])
    ack_type = f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK"
    tail = fs.join(["", header.processing_id if header else "P",
                    header.version if header else "2.5.1"])
    return head, fs.join(["", "", ack_type, ""]), tail


def _timestamp(now: float | None) -> str:
    """MSH-7 (UTC, to the second); formatted once per second."""
    global _last_ts
    second = int(now if now is not None else time.time())
    if _last_ts[0] != second:
        _last_ts = (second, time.strftime("%Y%m%d%H%M%S", time.gmtime(second)))
    return _last_ts[1]


def _err_segment(header: Header | None, spec: AckSpec, fs: str, enc: str, version: str) -> str:
    comp, sub = enc[0], enc[3] if len(enc) > 3 else "&"
    assert spec.error_code is not None
    name = ERROR_TEXT.get(spec.error_code, "Error")
    loc = spec.location.replace("^", comp)
    message = escape(spec.text, header)
    if _version_tuple(version) >= (2, 5):
        code = comp.join([str(spec.error_code), name, "HL70357"])
        # ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message
        return fs.join(["ERR", "", loc, code, "E", "", "", "", message])
    # v2.3/2.4: ERR-1 (ELD) = segment^sequence^field^code&text&table
    eld = comp.join([*loc.split(comp)[:3], sub.join([str(spec.error_code), name, "HL70357"])])
    return fs.join(["ERR", eld])


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"2.5.1"`` -> (2, 5, 1); stops at the first part that is not ASCII digits.

    ``str.isdigit()`` is not the test: it accepts ``"¹"`` and other digits ``int()`` refuses.
    """
    parts = []
    for p in version.split("."):
        if not _ASCII_DIGITS.fullmatch(p):
            break
        parts.append(int(p))
    return tuple(parts) or (2, 5)


def unescape(text: str, fs: str = "|", enc: str = "^~\\&") -> str:
    """Undo the delimiter escapes that ``escape`` writes (\\F\\ \\S\\ \\R\\ \\T\\ \\E\\)."""
    esc = enc[2] if len(enc) > 2 else "\\"
    if esc not in text:
        return text
    sub = enc[3] if len(enc) > 3 else "&"
    for name, ch in (("F", fs), ("S", enc[0]), ("R", enc[1]), ("T", sub), ("E", esc)):
        text = text.replace(f"{esc}{name}{esc}", ch)
    return text


def read_ack(raw: bytes) -> tuple[str, str, str]:
    """Return (MSA-1, MSA-2, reason) from a peer's ACK; reason joins MSA-3 and ERR text."""
    from mappings.hl7v2.text import normalise

    text = normalise(raw).decode("latin-1")
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("ACK does not start with MSH")
    fs = text[3]
    enc = text[4:8].split(fs)[0]
    msa: list[str] | None = None
    reasons: list[str] = []
    for seg in text.split("\r"):
        fields = seg.split(fs)
        if fields[0] == "MSA":
            msa = fields
            if len(fields) > 3 and fields[3]:
                reasons.append(fields[3])
        elif fields[0] == "ERR":
            reasons.append(fs.join(fields[1:]).strip(fs))
    if msa is None or len(msa) < 3:
        raise ValueError("ACK has no MSA segment with MSA-1 and MSA-2")
    reason = unescape("; ".join(reasons), fs, enc)
    return msa[1].strip().upper(), unescape(msa[2].strip(), fs, enc), reason
