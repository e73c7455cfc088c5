"""The ACK path's header reader and ACK/NAK builder."""

from __future__ import annotations

import pytest

from bench.hl7gen import orm_o01
from mappings.hl7v2.ack import AckSpec, build_ack, escape, next_control_id, read_ack
from mappings.hl7v2.header import HeaderError, parse_header

ORM = orm_o01("CTRL1", patient_id="MRN42")


def test_header_reads_type_control_id_version_and_patient() -> None:
    h = parse_header(ORM)
    assert (h.message_type, h.control_id, h.version, h.patient_id) == ("ORM^O01", "CTRL1",
                                                                       "2.5.1", "MRN42")
    assert h.accept_ack == "AL" and h.app_ack == "NE" and h.enhanced


@pytest.mark.parametrize("sep", [b"\r", b"\n", b"\r\n"])
def test_every_segment_terminator_is_accepted(sep: bytes) -> None:
    assert parse_header(ORM.replace(b"\r", sep)).patient_id == "MRN42"


def test_custom_delimiters_are_honoured() -> None:
    raw = b"MSH$%~\\&$RIS$H$RB$X$2026$$ADT%A01$C9$P$2.3\rPID$1$$M7%%%H$$DOE"
    h = parse_header(raw)
    assert (h.message_type, h.control_id, h.patient_id) == ("ADT^A01", "C9", "M7")


def test_header_error_names_the_missing_control_id() -> None:
    with pytest.raises(HeaderError) as err:
        parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5")
    assert err.value.code == 101 and err.value.location == "MSH^1^10"
    assert "MSH-10" in err.value.reason


def test_header_error_for_a_non_hl7_payload() -> None:
    with pytest.raises(HeaderError, match="does not start with an MSH"):
        parse_header(b"GET / HTTP/1.1")


def test_a_broken_segment_after_a_good_msh_keeps_the_header_for_the_nak() -> None:
    with pytest.raises(HeaderError) as err:
        parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X1|P|2.5\rpv1|1|E")
    assert err.value.header is not None and err.value.header.control_id == "X1"


def test_aa_ack_echoes_the_senders_control_id_and_uses_our_own() -> None:
    h = parse_header(b"MSH|^~\\&|RIS|HOSP|RB|X|2026||ORM^O01|ABC|P|2.3\rPID|1||M1")
    ack = build_ack(h, AckSpec("AA"), app="RADBRIDGE")
    assert ack is not None
    msh, msa = ack.decode().split("\r")[:2]
    assert msh.split("|")[2] == "RADBRIDGE" and msh.split("|")[4] == "RIS"
    assert msh.split("|")[8] == "ACK^O01^ACK" and msh.split("|")[9] != "ABC"
    assert msa == "MSA|AA|ABC"


def test_nak_carries_reason_in_msa3_and_err_for_v25() -> None:
    h = parse_header(b"MSH|^~\\&|RIS|HOSP|RB|X|2026||ORM^O01|ABC|P|2.5.1")
    ack = build_ack(h, AckSpec("AR", "type not accepted", 200, "MSH^1^9"))
    assert ack is not None
    code, control, reason = read_ack(ack)
    assert (code, control) == ("AR", "ABC")
    assert "type not accepted" in reason and "200^Unsupported message type^HL70357" in reason
    assert b"ERR||MSH^1^9|200^" in ack


def test_nak_uses_err1_for_versions_before_25() -> None:
    h = parse_header(b"MSH|^~\\&|RIS|HOSP|RB|X|2026||ORM^O01|ABC|P|2.3")
    ack = build_ack(h, AckSpec("AE", "bad", 101, "PID^1^3"))
    assert ack is not None and b"\rERR|PID^1^3^101&Required field missing&HL70357\r" in ack


@pytest.mark.parametrize(("msh15", "code", "expected"), [
    ("AL", "AA", "CA"), ("AL", "AR", "CR"), ("AL", "AE", "CE"), ("NE", "AA", None),
    ("ER", "AA", None), ("ER", "AE", "CE"), ("SU", "AA", "CA"), ("SU", "AR", None),
])
def test_enhanced_mode_follows_msh15(msh15: str, code: str, expected: str | None) -> None:
    h = parse_header(f"MSH|^~\\&|A|B|C|D|2026||ORM^O01|X|P|2.5|||{msh15}|NE".encode())
    ack = build_ack(h, AckSpec(code, "why"))
    assert (read_ack(ack)[0] if ack else None) == expected


def test_reason_text_is_escaped_with_the_senders_delimiters() -> None:
    h = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ORM^O01|X|P|2.5")
    assert escape("a|b^c~d\\e&f", h) == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"


def test_nak_without_a_readable_header_still_parses() -> None:
    ack = build_ack(None, AckSpec("AR", "no MSH", 100, "MSH^1"))
    assert ack is not None and read_ack(ack)[:2] == ("AR", "")


def test_control_ids_are_unique_and_fit_msh10_of_v23() -> None:
    ids = {next_control_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) <= 20 for i in ids)
