"""The ACK builder answers every header the reader lets through (issue 12, finding 10).

The atheris fuzzer found a frame whose MSH-12 is ``2.`` followed by byte 0xB9 (``¹``, a
character ``str.isdigit()`` accepts and ``int()`` refuses): building its NAK raised
``ValueError`` and the sender never heard back.
"""

from __future__ import annotations

import pytest

from mappings.hl7v2.ack import FALLBACK_REASON, AckSpec, build_ack, fallback_ack, read_ack
from mappings.hl7v2.header import HeaderError, parse_header
from tests.fixtures.hostile_hl7 import FUZZED_VERSION_DIGIT

FUZZED = FUZZED_VERSION_DIGIT  # the fuzzer's crashing input (tests/fixtures/hostile_hl7.py)


def _nak_for(raw: bytes) -> bytes | None:
    try:
        header = parse_header(raw)
    except HeaderError as exc:
        return build_ack(
            exc.header, AckSpec("AE" if exc.header else "AR", exc.reason, exc.code, exc.location)
        )
    return build_ack(header, AckSpec("AA"))


def test_the_fuzzed_frame_gets_an_ae_naming_its_control_id_and_the_bad_segment() -> None:
    ack = _nak_for(FUZZED)
    assert ack is not None
    code, control_id, reason = read_ack(ack)
    assert (code, control_id) == ("AE", "F1")
    assert "is not a valid HL7 segment" in reason


# The header is read as latin-1: its superscripts are the digits int() refuses.
@pytest.mark.parametrize("version", [b"2.\xb9", b"\xb2", b"2.5.\xb3", b"2\xb3.5", b"\xb9.\xb2"])
def test_a_version_with_non_ascii_digits_never_breaks_the_nak(version: bytes) -> None:
    raw = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|V1|P|" + version + b"\r\x00bad"
    ack = _nak_for(raw)
    assert ack is not None and read_ack(ack)[:2] == ("AE", "V1")


def test_a_version_read_up_to_its_ascii_digits_picks_the_err_layout() -> None:
    header = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|V2|P|2.5\xb9")
    # "2.5\xb9" reads as (2,): the v2.3/2.4 ERR-1 layout, not a crash.
    ack = build_ack(header, AckSpec("AE", "bad", 101, "PID^1^3"))
    assert ack is not None and b"\rERR|PID^1^3^101&Required field missing&HL70357\r" in ack


def test_the_fallback_nak_keeps_the_code_and_control_id_with_a_generic_reason() -> None:
    header = parse_header(FUZZED.split(b"\r")[0])
    code, control_id, reason = read_ack(fallback_ack(header, "AE", app="RB"))
    assert (code, control_id) == ("AE", "F1")
    assert FALLBACK_REASON in reason and "207^Application internal error" in reason


def test_the_fallback_for_a_stored_message_is_a_plain_aa() -> None:
    header = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|OK1|P|2.5")
    assert read_ack(fallback_ack(header, "AA")) == ("AA", "OK1", "")


def test_the_fallback_escapes_a_control_id_written_with_other_delimiters() -> None:
    header = parse_header(b"MSH$%~\\&$RIS$H$RB$X$2026$$ADT%A01$C|9^x$P$2.3")
    ack = fallback_ack(header, "AR")
    assert read_ack(ack)[:2] == ("AR", "C|9^x") and b"MSA|AR|C\\F\\9\\S\\x|" in ack


def test_the_fallback_without_a_header_still_reads_as_a_nak() -> None:
    assert read_ack(fallback_ack(None, "AR"))[:2] == ("AR", "")
