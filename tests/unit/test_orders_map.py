"""The orders mapping configured from channels.toml: ``map`` (paths per key), ``values``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import registry
from engine.config.schema import lint_text
from engine.model import Message, Status
from mappings.hl7v2.fieldmap import FieldPath
from mappings.hl7v2.orders import OrderEvent

MSH = "MSH|^~\\&|RIS|SITE|RADBRIDGE|SITE|20240101120000||ORM^O01|CTRL1|P|2.3"
PID = "PID|1||P1^^^SITE^MR||TESTCASE^PAT||19700101|F"


def _toml(extra: str, process: str = "orders") -> str:
    return f"""[store]
url = "sqlite:///x.db"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "{process}"
{extra}
"""


def _problems(extra: str, process: str = "orders") -> list[str]:
    return [str(p) for p in lint_text(_toml(extra, process), "channels.toml")[1]]


def _map(extra: str, *segments: str) -> OrderEvent:
    config, problems = lint_text(_toml(extra), "channels.toml")
    assert config is not None, problems
    channel = config.channel[0]
    processor: Any = registry.processor("orders").factory(channel, config)
    raw = "\r".join((MSH, *segments)).encode()
    outcome = processor.process(Message(1, "ris", 0.0, Status.RECEIVED, raw))
    assert outcome.status is Status.TRANSFORMED, outcome.error
    assert isinstance(outcome.domain, OrderEvent)
    return outcome.domain


def test_a_map_and_value_map_on_an_orders_channel_lint_clean() -> None:
    extra = (
        'map = { accession = ["OBR-20", "OBR-18"], priority = ["OBR-5", "ORC-7.6"] }\n'
        'values = { priority = { STAT = "S", "1" = "S", ROUTINE = "R" } }'
    )
    assert _problems(extra) == []


def test_an_unknown_map_key_is_a_lint_error_naming_the_valid_keys() -> None:
    (problem,) = _problems('map = { accesion = ["OBR-20"] }')
    assert problem.startswith("channels.toml:7: channel[0].map.accesion: unknown key; valid keys:")
    assert "accession" in problem and "patient_id" in problem


def test_a_bad_path_in_the_map_is_a_lint_error_with_file_line_and_key() -> None:
    (problem,) = _problems('map = { accession = ["OBR-20", "OBR20"] }')
    assert problem.startswith("channels.toml:7: channel[0].map.accession: ")
    assert "'OBR20' is not an HL7 field path" in problem


def test_a_value_map_on_a_composite_key_is_a_lint_error() -> None:
    (problem,) = _problems('values = { procedure_code = { A = "B" } }')
    assert problem.startswith("channels.toml:7: channel[0].values.procedure_code: unknown key")


def test_a_value_map_that_is_not_a_table_of_strings_is_a_lint_error() -> None:
    (problem,) = _problems("values = { priority = { STAT = 1 } }")
    assert "channel[0].values.priority: must be a table of strings" in problem


def test_map_on_a_channel_that_does_not_map_orders_is_refused() -> None:
    (problem,) = _problems('map = { accession = ["OBR-20"] }', process="forward")
    assert problem == 'channels.toml:7: channel[0].map: is read only by process = "orders"'


def test_the_accession_comes_from_the_first_mapped_path_that_holds_a_value() -> None:
    extra = 'map = { accession = ["OBR-20", "OBR-18"] }'
    obr = "OBR|1|PL1|FL1|C^T^L||||||||||||||ACC-18||ACC-20"
    assert _map(extra, PID, "ORC|NW|PL1|FL1||SC", obr).orders[0].accession == "ACC-20"
    obr_18_only = "OBR|1|PL1|FL1|C^T^L||||||||||||||ACC-18"
    assert _map(extra, PID, "ORC|NW|PL1|FL1||SC", obr_18_only).orders[0].accession == "ACC-18"


def test_the_priority_is_read_from_obr_5_through_the_value_map() -> None:
    extra = (
        'map = { priority = ["OBR-5", "ORC-7.6"] }\n'
        'values = { priority = { STAT = "S", "1" = "S", ROUTINE = "R" } }'
    )
    stat = _map(extra, PID, "ORC|NW|PL1|FL1||SC", "OBR|1|PL1|FL1|C^T^L|stat")
    one = _map(extra, PID, "ORC|NW|PL1|FL1||SC", "OBR|1|PL1|FL1|C^T^L|1")
    assert (stat.orders[0].priority, one.orders[0].priority) == ("S", "S")


def test_a_patient_in_pid_2_with_pid_3_empty_is_found_through_the_fallback() -> None:
    extra = 'map = { patient_id = ["PID-3", "PID-2"] }'
    event = _map(extra, "PID|1|P2^^^SITE^MR||||", "ORC|NW|PL1|FL1||SC", "OBR|1|PL1|FL1|C^T^L")
    assert event.patient.identifiers[0].value == "P2"


def test_keys_left_out_of_the_map_keep_the_defaults() -> None:
    extra = 'map = { accession = ["OBR-20"] }'
    event = _map(extra, PID, "ORC|NW|PL1|FL1||SC||^^^^^A", "OBR|1|PL1|FL1|C^T^L")
    assert (event.orders[0].placer_number, event.orders[0].priority) == ("PL1", "A")


def test_a_path_ending_in_bang_reads_the_field_whole_and_prints_back_the_same() -> None:
    path = FieldPath.parse("obr-20!")
    assert (path, str(path)) == (FieldPath("OBR", 20, whole=True), "OBR-20!")


def test_a_bang_after_a_component_is_refused() -> None:
    with pytest.raises(ValueError, match="is not an HL7 field path"):
        FieldPath.parse("OBR-18.1!")


def test_a_whole_read_on_a_composite_key_is_a_lint_error() -> None:
    (problem,) = _problems('map = { patient_id = ["PID-3!"] }')
    assert "channel[0].map.patient_id: PID-3! names a component or '!'" in problem


def test_the_default_accession_reads_an_st_obr_18_whole_with_its_component_separator() -> None:
    obr = "OBR|1|PL1|FL1|C^T^L||||||||||||||MR^20061213-0007|RP^1"
    order = _map("", PID, "ORC|NW|PL1|FL1||SC", obr).orders[0]
    assert (order.accession, order.requested_procedure_id) == ("MR^20061213-0007", "RP^1")


def test_an_escaped_component_separator_in_a_whole_read_is_decoded() -> None:
    obr = "OBR|1|PL1|FL1|C^T^L||||||||||||||MR\\S\\7~SECOND"
    assert _map("", PID, "ORC|NW|PL1|FL1||SC", obr).orders[0].accession == "MR^7"


def test_a_mapped_filler_field_is_read_whole() -> None:
    extra = 'map = { accession = ["OBR-20!", "OBR-18!"] }'
    obr = "OBR|1|PL1|FL1|C^T^L||||||||||||||ACC-18||CT^2024-9"
    assert _map(extra, PID, "ORC|NW|PL1|FL1||SC", obr).orders[0].accession == "CT^2024-9"


def _outcome(extra: str, *segments: str) -> Any:
    config, problems = lint_text(_toml(extra), "channels.toml")
    assert config is not None, problems
    processor: Any = registry.processor("orders").factory(config.channel[0], config)
    raw = "\r".join((MSH, *segments)).encode()
    return processor.process(Message(1, "ris", 0.0, Status.RECEIVED, raw))


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("stat", "S"), ("ASAP", "A"), ("Routine", "R"), ("r", "R"), ("PREOP", "P"), ("T", "T")],
)
def test_a_priority_word_or_lower_case_code_is_stored_as_its_table_0027_code(
    sent: str, stored: str
) -> None:
    orc = f"ORC|NW|PL1|FL1||SC||^^^^^{sent}"
    outcome = _outcome("", PID, orc, "OBR|1|PL1|FL1|C^T^L")
    assert outcome.domain.orders[0].priority == stored
    assert "mapped-flags" not in outcome.layers


def test_a_priority_that_does_not_map_is_stored_as_sent_and_flagged() -> None:
    outcome = _outcome("", PID, "ORC|NW|PL1|FL1||SC||^^^^^D", "OBR|1|PL1|FL1|C^T^L")
    assert outcome.domain.orders[0].priority == "D"
    (flag,) = json.loads(outcome.layers["mapped-flags"])
    assert flag.startswith("priority 'D' is not in HL7 table 0027")


def test_the_channels_value_map_is_applied_before_the_table_and_is_not_flagged() -> None:
    extra = 'values = { priority = { "3" = "R", "${PRIO}" = "R", D = "DEFERRED" } }'
    for sent, stored in (("3", "R"), ("${PRIO}", "R"), ("D", "DEFERRED")):
        orc = f"ORC|NW|PL1|FL1||SC||^^^^^{sent}"
        outcome = _outcome(extra, PID, orc, "OBR|1|PL1|FL1|C^T^L")
        assert (outcome.domain.orders[0].priority, "mapped-flags" in outcome.layers) == (stored, False)


def test_an_unmapped_priority_of_one_of_several_orders_names_that_order() -> None:
    segments = (
        PID,
        "ORC|NW|PL1|FL1||SC||^^^^^S",
        "OBR|1|PL1|FL1|C^T^L",
        "ORC|NW|PL2|FL2||SC||^^^^^9",
        "OBR|2|PL2|FL2|C^T^L",
    )
    (flag,) = json.loads(_outcome("", *segments).layers["mapped-flags"])
    assert flag.startswith("priority '9' (order 2) is not in HL7 table 0027")
