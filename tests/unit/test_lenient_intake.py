"""Lenient intake on the ACK path (issue 14): what the header read repairs instead of refusing."""

from __future__ import annotations

import pytest

from engine.config.schema import lint_text
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.answerer import HL7Answerer
from mappings.hl7v2.header import HeaderError, generated_id, parse_header

_MSG = (
    b"MSH|^~\\&|RIS|HOSP|RB|AI|20261130101500||ORM^O01|L1|P|2.3\r"
    b"PID|1||MRN9^^^HOSP^MR||DOE^JANE\r"
    b"OBR|1|PL1||CT^CT HEAD|||||||||Reason: fall\rpatient is on warfarin|||||ACC1"
)
_BOM = b"\xef\xbb\xbf"


def _answer(payload: bytes) -> tuple[str, tuple[str, ...]]:
    header, refusal = HL7Answerer("RB", "AI").read(payload)
    assert header is not None
    return (refusal.code if refusal else "AA"), header.flags


def test_a_byte_order_mark_before_msh_is_skipped_and_the_message_accepted() -> None:
    header = parse_header(_BOM + _MSH_ONLY)
    assert (header.control_id, header.message_type, header.patient_id) == ("L2", "ADT^A01", "M7")
    assert header.flags == ()


def test_a_byte_order_mark_before_a_crlf_and_msh_is_skipped_too() -> None:
    assert parse_header(_BOM + b"\r\n" + _MSH_ONLY).control_id == "L2"


def test_a_byte_order_mark_anywhere_else_is_still_not_an_msh() -> None:
    with pytest.raises(HeaderError, match="does not start with an MSH"):
        parse_header(b"\r\n" + _BOM + b"X" + _MSH_ONLY)


def test_a_stray_line_break_inside_a_field_is_answered_aa_and_flagged() -> None:
    code, flags = _answer(_MSG)
    assert code == "AA"
    assert flags == ("line 4 is not a segment: joined onto OBR as a line break inside a field",)


def test_the_segment_after_a_joined_fragment_is_still_checked() -> None:
    code, _ = _answer(_MSG + b"\rpv1|1|E")
    assert code == "AE"


def test_a_patient_id_split_off_by_a_stray_line_break_is_read_from_the_joined_segment() -> None:
    msg = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|L3|P|2.3\rPID|1|\rx|M5^^^H^MR|"
    header = parse_header(msg)
    assert header.patient_id == "M5" and len(header.flags) == 1


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a lower-case segment id", b"pv1|1|E"),
        ("a segment id with a bad character", b"P_1|1"),
        ("binary bytes", b"\x00\x01junk"),
        ("a bare three-letter line", b"abc"),
    ],
)
def test_a_broken_segment_that_is_no_field_fragment_keeps_its_ae(
    name: str, fragment: bytes
) -> None:
    code, _ = _answer(_MSH_ONLY + b"\r" + fragment)
    assert code == "AE", name


def test_a_fragment_right_after_msh_is_joined_onto_msh() -> None:
    code, flags = _answer(_MSH_ONLY.replace(b"\rPID", b"\rcontinued text\rPID"))
    assert code == "AA" and "joined onto MSH" in flags[0]


_MSH_ONLY = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|L2|P|2.3\rPID|1||M7"


_CHANNEL = '[[channel]]\nname = "ris"\nsource = { type = "mllp", listen = "127.0.0.1:2575" }\n'
_NO_ID = b"MSH|^~\\&|RIS|H|RB|AI|20261130101500||ORM^O01||P|2.3\rPID|1||M8"


def test_an_empty_control_id_is_still_refused_ar_101_by_default() -> None:
    header, refusal = HL7Answerer("RB", "AI").read(_NO_ID)
    assert header is None and refusal is not None
    assert (refusal.code, refusal.error_code, refusal.location) == ("AR", 101, "MSH^1^10")


def test_an_empty_control_id_is_taken_with_a_generated_id_when_the_channel_says_so() -> None:
    answerer = HL7Answerer("RB", "AI", empty_control_id="generate")
    header, refusal = answerer.read(_NO_ID)
    assert refusal is None and header is not None
    assert header.control_id == generated_id(_NO_ID) and len(header.control_id) == 20
    assert header.flags == (f"MSH-10 was empty: control id {header.control_id} generated",)


def test_the_generated_id_is_the_same_for_a_resend_and_differs_for_another_message() -> None:
    again = parse_header(_NO_ID, generate_control_id=True).control_id
    other = parse_header(_NO_ID.replace(b"101500", b"101501"), generate_control_id=True)
    assert again == generated_id(_NO_ID) != other.control_id


def test_the_ack_of_a_generated_id_echoes_the_empty_msh_10_the_sender_sent() -> None:
    answerer = HL7Answerer("RB", "AI", empty_control_id="generate")
    header, _ = answerer.read(_NO_ID)
    assert read_ack(answerer.build(header, answerer.accepted) or b"")[:2] == ("AA", "")
    assert read_ack(answerer.fallback(header, answerer.accepted))[:2] == ("AA", "")


def test_a_generated_id_and_a_joined_fragment_are_both_flagged() -> None:
    header = parse_header(_NO_ID + b"\rmore text", generate_control_id=True)
    assert [f.split(":")[0] for f in header.flags] == [
        "MSH-10 was empty",
        "line 3 is not a segment",
    ]


def test_lint_names_a_bad_empty_control_id_option_with_file_line_and_key() -> None:
    text = _CHANNEL + 'empty_control_id = "invent"\n'
    (problem,) = lint_text(text, "channels.toml", check_files=False)[1]
    assert (problem.line, problem.key) == (4, "channel[0].empty_control_id")
    assert "'reject' or 'generate'" in problem.message


def test_lint_takes_empty_control_id_generate() -> None:
    text = _CHANNEL + 'empty_control_id = "generate"\n'
    config, problems = lint_text(text, "channels.toml", check_files=False)
    assert problems == [] and config is not None
    assert config.channel_named("ris").empty_control_id == "generate"
