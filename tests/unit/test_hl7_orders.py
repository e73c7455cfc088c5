"""ADT / ORM^O01 / OMI^O23 -> Patient, Order: golden files, focused cases, fuzzing."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.model import Identifier, Order
from mappings.hl7v2.fieldmap import FieldMap, FieldPath
from mappings.hl7v2.orders import (
    MappingError,
    OrderEvent,
    PatientEvent,
    map_message,
    map_order,
    parse_message,
    parse_timestamp,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hl7"
CASES = sorted(GOLDEN.glob("*.hl7"))

MSH_ORM = "MSH|^~\\&|RIS|SITE|RADBRIDGE|SITE|20240101120000||ORM^O01|CTRL1|P|2.3"
MSH_OMI = "MSH|^~\\&|RIS|SITE|RADBRIDGE|SITE|20240101120000||OMI^O23^OMI_O23|CTRL2|P|2.5.1"
PID = "PID|1||P1^^^SITE^MR||TESTCASE^PAT||19700101|F"
ORC = "ORC|NW|PL1|FL1||SC"
OBR = "OBR|1|PL1|FL1|CODE1^PROCEDURE ONE^L"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _raw(*segments: str) -> bytes:
    return "\r".join(segments).encode()


def _orders(*segments: str, fieldmap: FieldMap | None = None) -> list[Order]:
    event = map_message(_raw(*segments), fieldmap)
    assert isinstance(event, OrderEvent)
    return event.orders


def _error(*segments: str) -> MappingError:
    with pytest.raises(MappingError) as info:
        map_message(_raw(*segments))
    return info.value


# --- golden files -----------------------------------------------------------------------------


def test_golden_directory_holds_at_least_ten_cases_in_pairs() -> None:
    inputs = {p.stem for p in GOLDEN.glob("*.hl7")}
    expected = {p.stem for p in GOLDEN.glob("*.json")}
    assert inputs == expected
    assert len(inputs) >= 10


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden_message_maps_to_its_expected_json(case: Path) -> None:
    expected = json.loads(case.with_suffix(".json").read_text(encoding="utf-8"))
    if "error" in expected:
        with pytest.raises(MappingError) as info:
            map_message(case.read_bytes())
        assert {"reason": info.value.reason, "location": info.value.location} == expected["error"]
    else:
        assert _jsonable(asdict(map_message(case.read_bytes()))) == expected


# --- field paths and the field map --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("OBR-18", FieldPath("OBR", 18)),
        ("ORC-7.6", FieldPath("ORC", 7, 6)),
        ("PID-3.4.1", FieldPath("PID", 3, 4, 1)),
        (" zds-1 ", FieldPath("ZDS", 1)),
        ("TQ1-9", FieldPath("TQ1", 9)),
    ],
)
def test_field_path_reads_segment_field_component_and_subcomponent(
    text: str, path: FieldPath
) -> None:
    assert FieldPath.parse(text) == path
    assert FieldPath.parse(str(path)) == path


@pytest.mark.parametrize(
    "text",
    ["", "PID", "PID3", "PI-3", "1ID-3", "PID-0", "PID-3.0", "PID-1000", "PID-3.1.2.3", "PID-3."],
)
def test_field_path_rejects_malformed_paths(text: str) -> None:
    with pytest.raises(ValueError, match="not an HL7 field path"):
        FieldPath.parse(text)


def test_field_map_accepts_a_single_path_in_place_of_a_list() -> None:
    assert FieldMap(accession="OBR-20").accession == (FieldPath("OBR", 20),)  # type: ignore[arg-type]


def test_field_map_rejects_a_component_on_a_whole_field_value() -> None:
    with pytest.raises(ValidationError, match="reads a whole field"):
        FieldMap(patient_identifiers=["PID-3.1"])  # type: ignore[arg-type]


def test_field_map_reports_every_error_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        FieldMap(accesion=["OBR-18"], modality=["OBR24"], order_control=[])  # type: ignore[call-arg,arg-type]
    assert {e["loc"][0] for e in info.value.errors()} == {"accesion", "modality", "order_control"}


def test_field_map_serialises_paths_back_to_strings() -> None:
    dumped = FieldMap().model_dump()
    assert dumped["priority"] == ["ORC-7.6", "OBR-27.6", "TQ1-9"]
    schema = FieldMap.model_json_schema()["properties"]["accession"]
    assert schema["type"] == "array" and "pattern" in schema["items"]


def test_accession_comes_from_a_site_specific_field() -> None:
    obr = "OBR|1|PL1||CODE1" + "|" * 16 + "SITE-ACC-9"
    assert _orders(MSH_ORM, PID, ORC, obr)[0].accession is None
    site = FieldMap(accession=["OBR-18", "IPC-1", "OBR-20"])  # type: ignore[arg-type]
    assert _orders(MSH_ORM, PID, ORC, obr, fieldmap=site)[0].accession == "SITE-ACC-9"


# --- field fallbacks ----------------------------------------------------------------------------


def test_priority_falls_back_from_orc_to_tq1() -> None:
    orders = _orders(
        MSH_OMI, PID, ORC, "TQ1|1||||||||S^Stat^HL70485", OBR, "IPC|ACC1|RP1|1.2.3|SPS1|CT"
    )
    assert orders[0].priority == "S"


def test_priority_prefers_orc_over_obr_and_tq1() -> None:
    orc = "ORC|NW|PL1|FL1||SC||^^^^^A"
    obr = OBR + "|" * 23 + "^^^^^R"
    orders = _orders(MSH_OMI, PID, orc, "TQ1|1||||||||S", obr, "IPC|ACC1")
    assert orders[0].priority == "A"


def test_placer_and_filler_numbers_fall_back_from_orc_to_obr() -> None:
    order = _orders(MSH_ORM, PID, "ORC|NW||||SC", "OBR|1|OBR-PL^EPIC|OBR-FL^RIS|CODE1")[0]
    assert (order.placer_number, order.filler_number) == ("OBR-PL", "OBR-FL")


def test_ordered_at_falls_back_from_orc_9_to_obr_6() -> None:
    order = _orders(MSH_ORM, PID, ORC, "OBR|1|PL1|FL1|CODE1||202401021530")[0]
    assert order.ordered_at == datetime(2024, 1, 2, 15, 30)


def test_second_obr_without_its_own_orc_becomes_an_order_sharing_that_orc() -> None:
    orders = _orders(MSH_ORM, PID, "ORC|CA|PL1", "OBR|1|PL1||A|||||||||||||ACC1", "OBR|2|PL2||B")
    assert [(o.control, o.placer_number, o.procedure_code) for o in orders] == [
        ("CA", "PL1", "A"),
        ("CA", "PL1", "B"),
    ]


def test_adt_trigger_falls_back_to_evn_1() -> None:
    raw = _raw("MSH|^~\\&|A|B|C|D|20240101||ADT|C1|P|2.2", "EVN|A04|20240101", PID)
    event = map_message(raw)
    assert isinstance(event, PatientEvent)
    assert (event.message_type, event.event) == ("ADT^A04", "A04")


def test_hl7_null_value_reads_as_absent() -> None:
    raw = _raw("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|C1|P|2.5", 'PID|1||P1||""^""||""|""')
    event = map_message(raw)
    assert isinstance(event, PatientEvent)
    patient = event.patient
    assert (patient.family_name, patient.birth_date, patient.sex) == (None, None, None)


# --- delimiters, escapes, charsets ------------------------------------------------------------


def test_python_hl7_honours_the_messages_own_delimiters() -> None:
    msh = "MSH#*@/!#RIS#SITE#RB#SITE#20240101##ORM*O01#C1#P#2.3"
    pid = "PID#1##P1***SITE!1.2.3!ISO*MR@P2***OTHER*PI##NAME*GIVEN/S/X"
    event = map_message(_raw(msh, pid, "ORC#NW#PL1", "OBR#1#PL1##C*TEXT/F/ONE/T/TWO"))
    assert isinstance(event, OrderEvent)
    assert event.patient.identifiers == [
        Identifier("P1", "SITE", "MR"),
        Identifier("P2", "OTHER", "PI"),
    ]
    assert event.patient.given_name == "GIVEN*X"
    assert event.orders[0].procedure_text == "TEXT#ONE!TWO"


def test_escape_sequences_are_decoded_with_the_message_delimiters() -> None:
    obr = r"OBR|1|PL1||C^A\F\B\S\C\T\D\R\E\E\\X4B\\H\bold\N\\Q\|"
    assert _orders(MSH_ORM, PID, ORC, obr)[0].procedure_text == "A|B^C&D~E\\Kbold\\Q\\"


def test_msh_18_charset_decodes_latin1_names() -> None:
    msh = MSH_ORM + "||||||8859/1"
    raw = _raw(msh, "PID|1||P1||M\xdcLLERTEST^J\xd6RG", ORC, OBR)
    event = map_message(raw.decode().encode("latin-1"))
    assert (event.patient.family_name, event.patient.given_name) == ("MÜLLERTEST", "JÖRG")


def test_line_feed_terminators_and_mllp_framing_are_tolerated() -> None:
    raw = b"\x0b" + "\r\n".join([MSH_ORM, PID, ORC, OBR]).encode() + b"\n\n\x1c\r"
    assert _jsonable(asdict(map_message(raw))) == _jsonable(
        asdict(map_message(_raw(MSH_ORM, PID, ORC, OBR)))
    )


def test_a_parsed_message_can_be_mapped_directly() -> None:
    orders = map_order(parse_message(_raw(MSH_ORM, PID, ORC, OBR)))
    assert [o.placer_number for o in orders] == ["PL1"]


# --- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1)),
        ("20240305", datetime(2024, 3, 5)),
        ("202403051015", datetime(2024, 3, 5, 10, 15)),
        ("20240305101530.12", datetime(2024, 3, 5, 10, 15, 30, 120000)),
        (
            "20240305101530-0500",
            datetime(2024, 3, 5, 10, 15, 30, tzinfo=timezone(-timedelta(hours=5))),
        ),
        (
            "202403051015+0530",
            datetime(2024, 3, 5, 10, 15, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
    ],
)
def test_hl7_timestamps_keep_their_precision_and_offset(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["2024-03-05", "202413", "20240230", "2024030510+9900", "2024030"])
def test_malformed_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


# --- mapping errors -------------------------------------------------------------------------------


def test_mapping_error_names_the_missing_field() -> None:
    err = _error(MSH_ORM, "PID|1||||TESTCASE^PAT", ORC, OBR)
    assert (str(err), err.location) == ("PID-3 / PID-2 are empty", "PID-3")


def test_mapping_error_names_a_missing_segment() -> None:
    assert _error(MSH_ORM, ORC, OBR).reason == "PID segment is missing"
    merge = _error("MSH|^~\\&|A|B|C|D|20240101||ADT^A40|C1|P|2.5", PID)
    assert (merge.reason, merge.location) == ("MRG segment is missing", "MRG")


def test_malformed_timestamp_is_a_mapping_error_naming_the_field() -> None:
    err = _error(MSH_ORM, PID, "ORC|NW|PL1||||||| 2024-01-01", OBR)
    assert err.location == "ORC-9"
    assert "2024" not in err.reason  # the reason never quotes message content


def test_order_without_any_order_number_is_refused() -> None:
    err = _error(MSH_ORM, PID, "ORC|NW", "OBR|1|||CODE1")
    assert err.location == "ORC-2"
    assert "OBR-18" in err.reason


def test_order_errors_say_which_order_of_several() -> None:
    err = _error(MSH_ORM, PID, ORC, OBR, "ORC||PL2", "OBR|2|PL2||CODE2")
    assert (err.reason, err.location) == ("ORC-1 is empty (order 2)", "ORC-1")


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (b"PID|1||P1", "MSH"),
        (b"", "MSH"),
        (b"MSH|^^\\&|A|B", "MSH-2"),
        (b"MSH1^~\\&1A", "MSH-2"),
        (b"MSH|^~\\&", "MSH-9"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ADT^A47|C1|P|2.5\rPID|1||P1", "MSH-9"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C1|P|2.5\rPID|1||P1", "MSH-9"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORM^O01|C1|P|2.3\rPID|1||P1", "ORC"),
    ],
)
def test_unmappable_messages_name_the_segment_or_field(raw: bytes, location: str) -> None:
    with pytest.raises(MappingError) as info:
        map_message(raw)
    assert info.value.location == location


# --- fuzzing --------------------------------------------------------------------------------------

_FUZZ_MSH = [
    MSH_ORM.encode(),
    MSH_OMI.encode(),
    b"MSH|^~\\&#|A|B|C|D|20240101||ADT^A40|C1|P|2.7",
    b"MSH$%~\\&$A$B$C$D$20240101$$ADT%A08$C1$P$2.3",
]
_FIELD = st.text(st.sampled_from(list('|^~\\&"#$%.+-0129AZ ')), max_size=12) | st.text(max_size=8)
_SEGMENT = st.builds(
    lambda name, fields: "|".join([name, *fields]),
    st.sampled_from(["PID", "PV1", "MRG", "EVN", "ORC", "OBR", "TQ1", "IPC", "ZDS", "MSH", "ZZZ"]),
    st.lists(_FIELD, max_size=30),
)


def _maps_or_refuses(raw: bytes) -> None:
    try:
        result = map_message(raw)
    except MappingError:
        return
    assert isinstance(result, PatientEvent | OrderEvent)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_FUZZ_MSH), st.sampled_from([b"", b"\r", b"\n"]), st.binary(max_size=400))
def test_map_message_raises_only_mapping_error_on_arbitrary_bytes_after_a_valid_msh(
    msh: bytes, joint: bytes, tail: bytes
) -> None:
    _maps_or_refuses(msh + joint + tail)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_FUZZ_MSH[:2]), st.lists(_SEGMENT, max_size=8), st.sampled_from(["\r", "\n"])
)
def test_map_message_raises_only_mapping_error_on_arbitrary_segments_after_a_valid_msh(
    msh: bytes, segments: list[str], terminator: str
) -> None:
    _maps_or_refuses(msh + terminator.join(["", *segments]).encode())
