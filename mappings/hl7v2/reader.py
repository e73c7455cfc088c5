"""A fast, lenient HL7 v2 message reader and writer, lazy below the segment.

``parse(data)`` makes one pass over the normalised text: segments are split on ``\\r`` and
nothing below the segment is touched until a path reads it. A segment is split into fields
the first time a path touches it (and cached); repetitions, components and subcomponents
are split on demand, per read, so nothing is allocated for fields no path reads.

Lenient, as real feeds need it:

* any segment terminator (``\\r``, ``\\n``, ``\\r\\n``), blank lines dropped, ends trimmed
  (the rules of :func:`mappings.hl7v2.text.normalise`), MLLP framing bytes and a UTF-8 BOM
  before ``MSH`` stripped;
* the message's own delimiters from MSH-1 and MSH-2, including the v2.7 truncation
  character (a fifth MSH-2 character, escaped ``\\P\\``);
* Z-segments and unknown segments read like any other;
* a line that does not start with a segment id (``[A-Z][A-Z0-9]{2}`` then the field
  separator or the end) is a stray line break inside a field: it is joined back onto the
  previous segment with the break kept as ``\\X0D\\`` (so the field reads with its line break
  and the message re-encodes well formed), and :attr:`Message.flags` says so;
* never raises: text without an MSH reads with the default delimiters ``|^~\\&`` and a flag.

Values are unescaped on read (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\`` and ``\\Xhh..\\``;
any other sequence, ``\\H\\``, ``\\N\\``, ``\\.br\\``, is left as sent) and escaped on write.
``encode()`` joins the segments with the message's own delimiters: an unmodified message
encodes to its normalised input, character for character (:func:`normalise`).

Paths (``PID-3[.5=MR].1``, ``OBX[3]-5``, ``OBR-18!``) are compiled once by
:func:`mappings.hl7v2.readpath.compile_path`, re-exported here; their docstring gives the
grammar and what reading, writing and deleting mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mappings.hl7v2.text import _HL7_CHARSETS, decode

DEFAULT_FS = "|"
DEFAULT_ENCODING = "^~\\&"
HEADER_SEGMENTS = frozenset({"MSH", "FHS", "BHS"})  # MSH-1 is the separator, MSH-2 encoding
_BOM = "\ufeff"
_TRIM = "\r\n\t \x0b\x1c"
_BLANKS = re.compile(r"\r{2,}")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_VALID_HEADS: dict[str, set[str]] = {}  # per field separator: "PID|" ... seen valid
_MAX_VALID_HEADS = 1024


class Segment:
    """One segment: its id, its text as encoded, and its fields once a path touched it.

    ``fields[n]`` is field *n* as encoded (escapes kept); for MSH, FHS and BHS ``fields[1]``
    is the field separator itself, so MSH-n is ``fields[n]`` there too.
    """

    __slots__ = ("id", "text", "_fields", "alive")

    def __init__(self, seg_id: str, text: str) -> None:
        self.id = seg_id
        self.text = text
        self._fields: list[str] | None = None
        self.alive = True

    def fields(self, fs: str) -> list[str]:
        """The fields, split on first use and cached."""
        fields = self._fields
        if fields is None:
            fields = self.text.split(fs)
            if self.id in HEADER_SEGMENTS:
                fields.insert(1, fs)
            self._fields = fields
        return fields

    def store(self, fields: list[str], fs: str) -> None:
        """Replace the fields after a write and re-encode the segment's text."""
        self._fields = fields
        self.id = fields[0]
        self.text = fs.join(fields[:1] + fields[2:] if self.id in HEADER_SEGMENTS else fields)


class _Scope:
    """Segments that paths resolve in: the whole message, or one group of it."""

    __slots__ = ()
    msg: Message

    def segments(self) -> list[Segment]:
        raise NotImplementedError

    def add_segment(self, text: str) -> Segment:
        raise NotImplementedError

    def find(self, seg_id: str) -> list[Segment]:
        """Every segment called *seg_id* in this scope, in message order."""
        return [s for s in self.segments() if s.id == seg_id]

    def get(self, path: str) -> str:
        """Shortcut: ``compile_path(path).get(self)`` (compiled paths are cached)."""
        return _compiled(path).get(self)

    def get_all(self, path: str) -> list[str]:
        """Shortcut: ``compile_path(path).get_all(self)``."""
        return _compiled(path).get_all(self)

    def set(self, path: str, value: str, *, encoded: bool = False) -> None:
        """Shortcut: ``compile_path(path).set(self, value, encoded=encoded)``."""
        _compiled(path).set(self, value, encoded=encoded)

    def delete(self, path: str) -> None:
        """Shortcut: ``compile_path(path).delete(self)``."""
        _compiled(path).delete(self)

    def groups(self, head: str, *members: str) -> list[Group]:
        """One :class:`Group` per *head* segment (e.g. per OBR), holding the segments after it.

        A group runs from its head to the next head; with *members* given (``"OBX"``), only
        those segments join it (an NTE between OBX rows is skipped, not a boundary).
        """
        wanted = frozenset(members)
        out: list[Group] = []
        for seg in self.segments():
            if seg.id == head:
                out.append(Group(self.msg, [seg]))
            elif out and (not wanted or seg.id in wanted):
                out[-1].members.append(seg)
        return out


class Message(_Scope):
    """A parsed message: its delimiters, its segments, and the flags reading it raised."""

    __slots__ = (
        "fs",
        "comp",
        "rep",
        "esc",
        "sub",
        "trunc",
        "codec",
        "flags",
        "_segs",
        "_index",
        "_unescape_re",
    )

    def __init__(self, text: str, codec: str = "latin-1") -> None:
        self.flags: list[str] = []
        self.codec = codec  # the Python codec the bytes were decoded with
        self._read_delimiters(text)
        self._segs = self._split(text)
        self._index: dict[str, list[Segment]] | None = None
        self._unescape_re: re.Pattern[str] | None = None

    @property
    def msg(self) -> Message:  # type: ignore[override]
        return self

    def _read_delimiters(self, text: str) -> None:
        if text.startswith(tuple(HEADER_SEGMENTS)) and len(text) > 3:
            fs = text[3]
            end = text.find(fs, 4)
            enc = text[4:end] if end >= 0 else text[4:].split("\r", 1)[0]
        else:
            self.flags.append("no MSH segment: read with the default delimiters |^~\\&")
            fs, enc = DEFAULT_FS, DEFAULT_ENCODING
        self.fs = fs
        chars = [enc[i : i + 1] for i in range(5)]  # "" where MSH-2 is short
        self.comp, self.rep, self.esc, self.sub, self.trunc = chars

    def _split(self, text: str) -> list[Segment]:
        if not text:
            return []
        lines = text.split("\r")
        fs = self.fs
        valid = _VALID_HEADS.setdefault(fs, set())
        out = [Segment(lines[0][:3], lines[0])]
        for number, line in enumerate(lines[1:], start=2):
            head = line[:4]
            if head in valid or (
                (head[3:] == fs or len(line) == 3) and _SEGMENT_ID.match(line[:3])
            ):
                if len(valid) < _MAX_VALID_HEADS and len(head) == 4:
                    valid.add(head)
                out.append(Segment(line[:3], line))
                continue
            prev = out[-1]
            prev.text += (f"{self.esc}X0D{self.esc}" if self.esc else " ") + line
            self.flags.append(
                f"line {number} is not a segment: joined onto {prev.id} as a "
                "line break inside a field"
            )
        return out

    def segments(self) -> list[Segment]:
        """The live segments, in order."""
        return self._segs

    def find(self, seg_id: str) -> list[Segment]:
        index = self._index
        if index is None:
            index = self._index = {}
            for seg in self._segs:
                index.setdefault(seg.id, []).append(seg)
        return index.get(seg_id, [])

    def __len__(self) -> int:
        return len(self._segs)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segs)

    def encode(self) -> str:
        """The message as HL7 text with its own delimiters, segments joined by ``\\r``."""
        return "\r".join(s.text for s in self._segs)

    def to_bytes(self) -> bytes:
        """:meth:`encode` in the codec the message was read with (what was sent, byte for byte)."""
        return self.encode().encode(self.codec, "replace")

    def add_segment(self, text: str, *, after: Segment | None = None) -> Segment:
        """Add a segment given as HL7 text in the message's delimiters (``"ZDS|1.2.3^^App"``).

        It goes after *after* when given, else at the end. Raises ValueError unless the text
        starts with a segment id and holds no line break.
        """
        if not (_SEGMENT_ID.match(text[:3]) and text[3:4] in ("", self.fs)) or "\r" in text:
            raise ValueError("a segment must start with an id like ZDS and hold no line break")
        seg = Segment(text[:3], text)
        where = self._segs.index(after) + 1 if after is not None else len(self._segs)
        self._segs.insert(where, seg)
        self._index = None
        return seg

    def remove(self, seg: Segment) -> None:
        """Remove one segment (a no-op when it is already gone)."""
        if seg.alive:
            seg.alive = False
            self._segs.remove(seg)
            self._index = None

    # --- escaping ------------------------------------------------------------------------------

    def unescape(self, value: str) -> str:
        """*value* as sent -> as meant: delimiter and hex escapes replaced, others kept."""
        esc = self.esc
        if not esc or esc not in value:
            return value
        pattern = self._unescape_re
        if pattern is None:
            e = re.escape(esc)
            pattern = self._unescape_re = re.compile(f"{e}([^{e}\r]*){e}")
        return pattern.sub(self._replace, value)

    def _replace(self, match: re.Match[str]) -> str:
        name = match.group(1)
        plain = {
            "F": self.fs,
            "S": self.comp,
            "T": self.sub,
            "R": self.rep,
            "E": self.esc,
            "P": self.trunc,
        }.get(name)
        if plain:
            return plain
        hexa = name[1:]
        if name[:1] == "X" and hexa and len(hexa) % 2 == 0 and _is_hex(hexa):
            return decode(bytes.fromhex(hexa), self.charset())
        return match.group(0)

    def escape(self, value: str) -> str:
        """*value* as meant -> as sent: every delimiter, line break and MLLP framing byte escaped.

        Whitespace at the very end of a message is still trimmed when it is read again.
        """
        esc = self.esc
        if not esc:
            return value.replace("\r", " ").replace("\n", " ")
        out = value.replace(esc, f"{esc}E{esc}")
        for char, name in (
            (self.fs, "F"),
            (self.comp, "S"),
            (self.sub, "T"),
            (self.rep, "R"),
            (self.trunc, "P"),
            ("\r", "X0D"),
            ("\n", "X0A"),
            ("\x0b", "X0B"),
            ("\x1c", "X1C"),
        ):
            if char and char in out:
                out = out.replace(char, f"{esc}{name}{esc}")
        return out

    def charset(self) -> str | None:
        """MSH-18, first repetition (None when absent)."""
        msh = self.find("MSH")
        if not msh:
            return None
        fields = msh[0].fields(self.fs)
        value = fields[18].split(self.rep)[0] if len(fields) > 18 and self.rep else ""
        return value.strip() or None


class Group(_Scope):
    """A head segment (an OBR) and the segments that belong to it; paths resolve inside it.

    Writes go to the message; :meth:`add_segment` puts the new segment after the group's last.
    """

    __slots__ = ("msg", "members")

    def __init__(self, msg: Message, members: list[Segment]) -> None:
        self.msg = msg
        self.members = members

    def segments(self) -> list[Segment]:
        return [s for s in self.members if s.alive]

    def add_segment(self, text: str) -> Segment:
        """Add a segment (HL7 text) to this group, after its last live segment."""
        live = self.segments()
        seg = self.msg.add_segment(text, after=live[-1] if live else None)
        self.members.append(seg)
        return seg


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def normalise(data: bytes | str) -> str:
    """The text :func:`parse` reads: BOM and framing stripped, one ``\\r`` per terminator.

    Bytes are decoded with MSH-18 (see :func:`mappings.hl7v2.text.decode`).
    """
    return _text(data)[0]


def _text(data: bytes | str) -> tuple[str, str]:
    """(normalised text, the codec it was decoded with)."""
    if isinstance(data, bytes):
        data = data.strip(b"\r\n\t \x0b\x1c")
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        charset = _sniff_charset(data)
        codec = _codec(data, charset)
        text = data.decode(codec) if codec else decode(data, charset)
        codec = codec or "latin-1"
    else:
        text, codec = data.strip(_TRIM), "utf-8"
    if text.startswith(_BOM):
        text = text[1:].strip(_TRIM)
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    if "\r\r" in text:
        text = _BLANKS.sub("\r", text)
    return text.strip(_TRIM), codec


def _codec(data: bytes, charset: str | None) -> str | None:
    """The first codec of :func:`decode`'s chain that decodes *data*, None if only latin-1."""
    preferred = _HL7_CHARSETS.get((charset or "").strip().upper())
    for codec in ([preferred] if preferred else []) + ["utf-8", "cp1252"]:
        try:
            data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
        return codec
    return None


def _sniff_charset(data: bytes) -> str | None:
    """MSH-18 read from the raw bytes, before decoding (the delimiters are ASCII)."""
    if not data.startswith(b"MSH") or len(data) < 5:
        return None
    head = data[: data.find(b"\r") if b"\r" in data else len(data)].split(b"\n", 1)[0]
    fields = head.split(head[3:4])
    if len(fields) < 18:
        return None
    rep = fields[1][1:2]
    value = fields[17].split(rep)[0] if rep else fields[17]
    return value.decode("latin-1").strip() or None


def parse(data: bytes | str) -> Message:
    """Read one HL7 v2 message (bytes or text); never raises. See the module docstring."""
    text, codec = _text(data)
    return Message(text, codec)


def _compiled(path: str) -> Path:
    return compile_path(path)


from mappings.hl7v2.readpath import Path, PathError, compile_path  # noqa: E402

__all__ = ["Group", "Message", "Path", "PathError", "Segment", "compile_path", "normalise", "parse"]
