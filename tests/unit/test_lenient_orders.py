"""Lenient order mapping (issue 14), through the ``orders`` processor as a channel runs it:
an ORC glued onto the segment before it, Study Instance UIDs checked against the UID grammar,
the PID-3 -> PID-2 patient id fallback, and every reader path form in a channel's ``map``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from channels.dicom import rules
from engine import registry
from engine.config.schema import lint_text
from engine.model import Message, Status
from mappings import uid
from mappings.hl7v2.fieldmap import FieldMap, FieldPath

MSH = "MSH|^~\\&|RIS|SITE|RADBRIDGE|SITE|20240101120000||ORM^O01|CTRL1|P|2.3"
MSH_OMI = "MSH|^~\\&|RIS|SITE|RADBRIDGE|SITE|20240101120000||OMI^O23^OMI_O23|CTRL2|P|2.5.1"
PID = "PID|1||P1^^^SITE^MR||TESTCASE^PAT||19700101|F"
PV1 = "PV1|1|E|ED^B1^01"
ORC = "ORC|NW|PL1|FL1||SC"
OBR = "OBR|1|PL1|FL1|C^T^L||||||||||||||ACC1||||||CT"


def _toml(extra: str) -> str:
    return f"""[store]
url = "sqlite:///x.db"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
{extra}
"""


def _outcome(*segments: str, extra: str = "", msh: str = MSH) -> Any:
    config, problems = lint_text(_toml(extra), "channels.toml")
    assert config is not None, problems
    processor: Any = registry.processor("orders").factory(config.channel[0], config)
    raw = "\r".join((msh, *segments)).encode()
    return processor.process(Message(1, "ris", 0.0, Status.RECEIVED, raw))


def _mapped(*segments: str, extra: str = "", msh: str = MSH) -> tuple[Any, list[str]]:
    """(the mapped event, its flags) of a message the processor takes."""
    outcome = _outcome(*segments, extra=extra, msh=msh)
    assert outcome.status is Status.TRANSFORMED, outcome.error
    flags = json.loads(outcome.layers.get("mapped-flags", b"[]"))
    return outcome.domain, flags


# --- an ORC glued onto the segment before it ---------------------------------------------------


def test_an_orc_glued_after_an_empty_last_field_is_read_and_the_order_mapped_with_a_flag() -> None:
    glued = PV1 + "|" + ORC  # "PV1|1|E|ED^B1^01|ORC|NW|...": the terminator became a "|"
    event, flags = _mapped(PID, glued, OBR)
    (order,) = event.orders
    assert (order.control, order.placer_number, order.status) == ("NW", "PL1", "SC")
    assert (order.accession, order.modality, event.patient.location) == ("ACC1", "CT", "ED")
    assert flags == [
        "an ORC segment was glued onto PV1 (a segment terminator lost): read as its own "
        "segment; PV1 fields from PV1-4 on were the ORC's and were not read as PV1 fields"
    ]


def test_an_orc_glued_onto_the_last_value_of_pid_is_split_off_that_value() -> None:
    event, flags = _mapped(PID + ORC, OBR)  # "...|19700101|FORC|NW|...": no "|" before it
    assert (event.patient.sex, event.orders[0].control) == ("F", "NW")
    (flag,) = flags
    assert "PID-8 ended in the ORC's id and was read without it" in flag


def test_a_cancel_glued_onto_pv1_still_cancels() -> None:
    event, _ = _mapped(PID, PV1 + "|ORC|CA|PL1|FL1||CA", OBR)
    assert event.orders[0].control == "CA"


def test_a_value_that_merely_reads_orc_is_not_split_and_the_missing_orc_still_refused() -> None:
    outcome = _outcome(PID, "PV1|1|E|ORC|ward 3", OBR)  # no order control code after it
    assert outcome.status is Status.ERROR and "ORC" in outcome.error


def test_a_message_with_its_own_orc_is_left_alone() -> None:
    event, flags = _mapped(PID, "PV1|1|E|ORC|NW", ORC, OBR)
    assert (event.patient.location, flags) == ("ORC", [])


# --- Study Instance UIDs checked against the UID grammar -----------------------------------


def test_a_valid_study_instance_uid_from_zds_1_is_stored() -> None:
    event, flags = _mapped(PID, ORC, OBR, "ZDS|1.2.840.113619.2.55.3^RADBRIDGE^Application^DICOM")
    assert (event.orders[0].study_instance_uid, flags) == ("1.2.840.113619.2.55.3", [])


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        ("1.2.03.4", "leading zero"),
        ("1.2..4", "empty component"),
        ("1.2.840.abc", "not digits and dots"),
        ("1." + "2" * 70, "over 64 characters"),
    ],
)
def test_a_study_instance_uid_breaking_the_grammar_is_not_stored_and_is_flagged(
    sent: str, problem: str
) -> None:
    event, flags = _mapped(PID, ORC, OBR, f"ZDS|{sent}^RADBRIDGE^Application^DICOM")
    assert event.orders[0].study_instance_uid is None
    assert flags == [
        f"study instance UID in ZDS-1 is not a valid DICOM UID ({problem}): not stored"
    ]
    assert sent not in flags[0]  # the flag names the rule, not the value


def test_a_bad_uid_in_ipc_3_of_an_omi_is_flagged_naming_ipc_3() -> None:
    ipc = "IPC|ACC9|RP9|1.2.3.x|SPS1|MR"
    event, flags = _mapped(PID, ORC, "OBR|1|PL1|FL1|C^T^L", ipc, msh=MSH_OMI)
    assert (event.orders[0].accession, event.orders[0].study_instance_uid) == ("ACC9", None)
    assert flags == ["study instance UID in IPC-3 is not a valid DICOM UID (not digits and dots): "
                     "not stored"]


def test_the_dicom_edge_and_the_orders_mapping_check_uids_with_one_function() -> None:
    assert rules.uid_problem is uid.uid_problem and rules.UID_MAX_CHARS == uid.UID_MAX_CHARS


# --- the patient id fallback: PID-3 empty -> PID-2 -----------------------------------------


def test_the_default_field_map_falls_back_to_pid_2() -> None:
    assert [str(p) for p in FieldMap().patient_identifiers] == ["PID-3", "PID-2"]


def test_a_patient_in_pid_2_with_pid_3_empty_is_mapped_and_the_fallback_flagged() -> None:
    event, flags = _mapped("PID|1|E77^^^SITE^PI||||DOE^JOHN", ORC, OBR)
    (ident,) = event.patient.identifiers
    assert (ident.value, ident.issuer, ident.type_code) == ("E77", "SITE", "PI")
    assert flags == ["patient id read from PID-2: PID-3 held no identifier"]


def test_a_pid_3_with_no_id_number_falls_back_too() -> None:
    event, flags = _mapped("PID|1|E78||^^^SITE^MR", ORC, OBR)
    assert event.patient.identifiers[0].value == "E78" and len(flags) == 1


def test_a_patient_in_pid_3_is_read_from_pid_3_without_a_flag() -> None:
    event, flags = _mapped("PID|1|OLD1|P1^^^SITE^MR", ORC, OBR)
    assert (event.patient.identifiers[0].value, flags) == ("P1", [])


def test_an_adt_falls_back_to_pid_2_too() -> None:
    msh = MSH.replace("ORM^O01", "ADT^A08")
    event, flags = _mapped("EVN|A08", "PID|1|E79", msh=msh)
    assert event.patient.identifiers[0].value == "E79" and flags[0].startswith("patient id read")


def test_with_both_empty_the_error_names_both_paths() -> None:
    outcome = _outcome("PID|1||||DOE", ORC, OBR)
    assert outcome.status is Status.ERROR and "PID-3 / PID-2 are empty" in outcome.error


# --- every path form of the reader grammar in a channel's ``map`` --------------------------

_PID_REPS = "PID|1||S9^^^SSA^SS~P7^^^SITE^MR~ACC77^^^SITE^ACSN||DOE^JANE"
_OBX = [f"OBX|{n}|ST|Q{n}||answer {n}" for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("option", "segments", "read"),
    [
        ('accession = ["PID-3[.5=ACSN].1"]', (_PID_REPS, ORC, "OBR|1|PL1|FL1|C^T^L"), "ACC77"),
        ('accession = ["PID-3[3].1"]', (_PID_REPS, ORC, "OBR|1|PL1|FL1|C^T^L"), "ACC77"),
        ('accession = ["OBX[3]-5"]', (PID, ORC, "OBR|1|PL1|FL1|C^T^L", *_OBX), "answer 3"),
        ('accession = ["OBR-18!"]', (PID, ORC, "OBR|1|PL1|FL1|C^T^L||||||||||||||MR^7"), "MR^7"),
        ('accession = ["OBR-18.2"]', (PID, ORC, "OBR|1|PL1|FL1|C^T^L||||||||||||||MR^7"), "7"),
        ('accession = ["PID-3[.5=MR]!"]', (_PID_REPS, ORC, "OBR|1|PL1"), "P7^^^SITE^MR"),
        ('accession = ["PID-3[.4.1=SSA].1"]', (_PID_REPS, ORC, "OBR|1|PL1"), "S9"),
    ],
)
def test_every_reader_path_form_reads_in_an_orders_channels_map(
    option: str, segments: tuple[str, ...], read: str
) -> None:
    event, _ = _mapped(*segments, extra=f"map = {{ {option} }}")
    assert event.orders[0].accession == read


def test_an_occurrence_counts_within_its_order() -> None:
    extra = 'map = { modality = ["OBX[2]-5"] }'
    segments = (PID, ORC, "OBR|1|PL1", *_OBX, "ORC|NW|PL2", "OBR|2|PL2", "OBX|1|ST|Q||MR",
                "OBX|2|ST|Q||CT")
    event, _ = _mapped(*segments, extra=extra)
    assert [o.modality for o in event.orders] == ["answer 2", "CT"]


def test_a_patient_id_can_select_the_mr_repetition() -> None:
    event, _ = _mapped(_PID_REPS, ORC, OBR, extra='map = { patient_id = ["PID-3[.5=MR]"] }')
    assert [i.value for i in event.patient.identifiers] == ["P7"]


def test_a_selected_repetition_that_is_absent_falls_through_to_the_next_path() -> None:
    extra = 'map = { patient_id = ["PID-3[.5=MR]", "PID-2"] }'
    event, flags = _mapped("PID|1|E80|S9^^^SSA^SS", ORC, OBR, extra=extra)
    assert event.patient.identifiers[0].value == "E80"
    assert flags == ["patient id read from PID-2: PID-3[.5=MR] held no identifier"]


@pytest.mark.parametrize(
    "text", ["PID-3[.5=MR].1", "OBX[3]-5", "OBR-18!", "PID-3[2]!", "PID-3[.4.1=SSA].1", "ORC-7.6"]
)
def test_each_path_form_parses_and_prints_back_as_written(text: str) -> None:
    path = FieldPath.parse(text)
    assert str(path) == text and FieldPath.parse(str(path)) == path
    assert FieldMap(accession=[text]).model_dump()["accession"] == [text]  # type: ignore[list-item]


def test_a_component_on_a_composite_key_is_a_lint_error_suggesting_the_selector() -> None:
    config, problems = lint_text(_toml('map = { patient_id = ["PID-3[.5=MR].1"] }'),
                                 "channels.toml")
    (problem,) = [str(p) for p in problems]
    assert "channel[0].map.patient_id: PID-3[.5=MR].1 names a component" in problem
    assert "select a repetition with PID-3[.5=MR]" in problem


@pytest.mark.parametrize(
    ("path", "reason"),
    [("OBX[0]-5", "numbers run from 1 to 999"), ("PID", "names a segment, not a field"),
     ("PID-3[.5=MR", "'[' is not closed")],
)
def test_a_malformed_map_path_is_a_lint_error_with_the_reason(path: str, reason: str) -> None:
    _, problems = lint_text(_toml(f'map = {{ accession = ["{path}"] }}'), "channels.toml")
    (problem,) = [str(p) for p in problems]
    assert problem.startswith("channels.toml:7: channel[0].map.accession: ") and reason in problem
