"""HL7 batches in one MLLP frame: split into messages, answered as a batch (or per message).

Structure (HL7 v2.5 ch. 2 §2.10.3.1, "HL7 batch file structure")::

    [FHS] { [BHS] { MSH ... } [BTS] } [FTS]

Read leniently, as real feeds send them: BTS and FTS may be missing (their counts are not
checked), header fields may be empty (a bare ``BHS`` or ``BHS|`` reads with ``|^~\\&``), blank
lines and a UTF-8 byte-order mark are dropped. Every ``MSH`` starts a message; segments before
the first ``MSH`` of a batch (not an envelope segment) form a part of their own that the
header read refuses (AR: it does not start with MSH), so a bad line is answered, never
silently dropped nor glued onto a good message.

The answer follows §2.10.3.2 ("Acknowledging batches", the first option): the receiver sends
back a *batch whose messages are the acknowledgements*, one ACK per message received, in
order; each ACK is the one a single message would get (its own MSA-1 AA/AE/AR and ERR), so a
bad message's AR/AE sits beside the others' AA. Per §2.10.3.3 and the segment definitions
(§2.15), the answering BHS carries our batch control id in BHS-11 and echoes the sender's
BHS-11 in BHS-12 (reference batch control id), FHS-11/FHS-12 alike; BTS-1 counts the ACKs in
the batch, FTS-1 the batches in the file. The structure mirrors the one received (an FHS only
if one came, a BHS/BTS per batch received).

A channel may instead answer ``per_message``: each message's ACK as its own MLLP frame, in
order (for senders that match ACKs one by one by MSA-2); a batch with no message still gets
the (empty) batch answer, so the sender always hears something.

There is no file *source* yet (``channels/file`` is a destination only): one would hand each
file to the same ``unbatch`` path. Replay and ``radbridge send`` split batch files with
:mod:`mappings.hl7v2.logfile`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mappings.hl7v2.ack import next_control_id
from mappings.hl7v2.text import normalise

BatchAck = Literal["batch", "per_message"]
_BOM = b"\xef\xbb\xbf"
_STARTS = (b"FHS", b"BHS")
_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_DEFAULT_ENCODING = "^~\\&"
_TRIM = b"\r\n\t \x0b\x1c"


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """What the answer echoes of an FHS or BHS: its delimiters and identity fields (as sent)."""

    seg_id: str
    fs: str
    encoding: str
    sending_app: str
    sending_facility: str
    control_id: str


@dataclass(slots=True)
class _Group:
    header: EnvelopeHeader | None
    first: int  # index of its first message in Batch.messages
    count: int = 0


@dataclass(slots=True)
class Batch:
    """A frame's messages in order, with what the answer needs of its envelope.

    ``notes[i]`` is the flag stored with message *i* (where in which batch it came).
    """

    messages: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    file_header: EnvelopeHeader | None = None
    groups: list[_Group] = field(default_factory=list)


def starts_batch(payload: bytes) -> bool:
    """True when *payload* (one frame) starts with FHS or BHS, after a BOM and blank lines."""
    head = payload.lstrip(_TRIM)
    if head[:3] == _BOM:
        head = head[3:].lstrip(_TRIM)
    return head[:3] in _STARTS


def split_batch(payload: bytes) -> Batch | None:
    """The messages of a batch frame, or None when *payload* is not a batch. Never raises."""
    if not starts_batch(payload):
        return None
    text = payload.strip(_TRIM)
    if text.startswith(_BOM):
        text = text[3:]
    batch = Batch()
    current: list[bytes] = []
    for seg in normalise(text).split(b"\r"):
        head = seg[:3]
        if head in _ENVELOPE or (head == b"MSH" and current):
            current = _close(batch, current)
        if head == b"FHS" and batch.file_header is None:
            batch.file_header = _envelope(seg)
        elif head == b"BHS":
            batch.groups.append(_Group(_envelope(seg), len(batch.messages)))
        elif head not in _ENVELOPE:
            current.append(seg)
    _close(batch, current)
    _annotate(batch)
    return batch


def _close(batch: Batch, current: list[bytes]) -> list[bytes]:
    """Add the message being collected (if any) to the batch's last group; a fresh list."""
    if current:
        if not batch.groups:  # messages straight under FHS, before any BHS
            batch.groups.append(_Group(None, len(batch.messages)))
        batch.messages.append(b"\r".join(current))
        batch.groups[-1].count += 1
    return []


def _envelope(seg: bytes) -> EnvelopeHeader:
    """An FHS/BHS read leniently: a missing separator or encoding takes the defaults."""
    text = seg.decode("latin-1")
    fs = text[3] if len(text) > 3 else "|"
    if fs.isalnum() or fs.isspace():
        fs = "|"
    fields = text.split(fs)
    fields += [""] * (12 - len(fields))
    encoding = fields[1] if len(fields[1]) >= 4 and fs not in fields[1] else _DEFAULT_ENCODING
    return EnvelopeHeader(text[:3], fs, encoding, fields[2], fields[3], fields[10].strip())


def _annotate(batch: Batch) -> None:
    """One note per message: its place in the frame and the batch control ids sent."""
    total = len(batch.messages)
    file_id = batch.file_header.control_id if batch.file_header else ""
    for group in batch.groups:
        ids = [f"BHS-11 {group.header.control_id!r}"] if group.header and \
            group.header.control_id else []
        ids += [f"FHS-11 {file_id!r}"] if file_id else []
        where = f" ({', '.join(ids)})" if ids else ""
        for i in range(group.first, group.first + group.count):
            batch.notes.append(f"message {i + 1} of {total} of an HL7 batch{where}")


def batch_answer(batch: Batch, acks: Sequence[bytes | None], mode: BatchAck, *,
                 app: str, facility: str, now: float | None = None) -> bytes | tuple[bytes, ...]:
    """The answer to *batch*: one batch of the *acks* (``batch``), or the acks as separate
    frames (``per_message``). *acks* are in message order; None (no ACK asked for, MSH-15)
    is left out. *now* (epoch seconds, default the clock) dates the answer's headers."""
    if mode == "per_message" and batch.messages:
        return tuple(a for a in acks if a is not None)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if now is None else now))
    return _batch_of(batch, acks, app, facility, stamp)


def _batch_of(batch: Batch, acks: Sequence[bytes | None], app: str, facility: str,
              now: str) -> bytes:
    """§2.10.3.2: a batch whose messages are the ACKs, mirroring the envelope received."""
    out: list[bytes] = []
    file_head = batch.file_header
    if file_head is not None:
        out.append(_answer_header(file_head, app, facility, now))
    groups = batch.groups or [_Group(None, 0, 0)]
    for group in groups:
        sent = [a for a in acks[group.first:group.first + group.count] if a is not None]
        head = group.header
        if head is not None:
            out.append(_answer_header(head, app, facility, now))
        out += [a.rstrip(b"\r") for a in sent]
        if head is not None:
            out.append(f"BTS{head.fs}{len(sent)}".encode("latin-1"))
    if file_head is not None:
        batches = sum(1 for g in groups if g.header is not None)
        out.append(f"FTS{file_head.fs}{batches}".encode("latin-1"))
    return b"\r".join(out) + b"\r"


def _answer_header(sent: EnvelopeHeader, app: str, facility: str, now: str) -> bytes:
    """FHS/BHS of the answer: we send it to the sender; -11 ours, -12 the sender's -11."""
    fs = sent.fs
    fields = [sent.seg_id, sent.encoding, app, facility, sent.sending_app,
              sent.sending_facility, now, "", "", "", next_control_id(), sent.control_id]
    return fs.join(fields).encode("latin-1", "replace")
