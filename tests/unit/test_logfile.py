"""Message logs for replay: MLLP-framed files, CR/LF files and HL7 batches."""

from __future__ import annotations

from channels.mllp.framing import frame
from channels.mllp.logfile import split_messages

A = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1||M1"
B = b"MSH|^~\\&|A|B|C|D|2026||ORM^O01|2|P|2.5\rPID|1||M2\rORC|NW"


def test_mllp_framed_files_are_split_by_frame() -> None:
    assert list(split_messages(frame(A) + b"\r\n" + frame(B))) == [A, B]


def test_lf_and_crlf_files_with_blank_lines_split_on_msh() -> None:
    data = A.replace(b"\r", b"\n") + b"\n\n" + B.replace(b"\r", b"\r\n") + b"\r\n"
    assert list(split_messages(data)) == [A, B]


def test_batch_envelopes_are_dropped() -> None:
    data = b"FHS|^~\\&\rBHS|^~\\&\r" + A + b"\r" + B + b"\rBTS|2\rFTS|1\r"
    assert list(split_messages(data)) == [A, B]


def test_a_batch_inside_one_frame_yields_each_message() -> None:
    assert list(split_messages(frame(b"BHS|^~\\&\r" + A + b"\r" + B + b"\rBTS|2"))) == [A, B]
