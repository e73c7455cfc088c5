"""The field-level diff of two HL7 texts, the filter/route trace and how ``try`` prints a step."""

from __future__ import annotations

from typing import Any

import pytest

from bench.hl7gen import orm_o01
from engine import registry
from engine.cli.tryrun import text_report
from engine.flow.dryrun import Tried, report
from engine.flow.processors import processor_for, trace_of
from engine.flow.trace import StepTrace
from engine.model import Message, Status
from engine.store.base import Outcome
from mappings.hl7v2.diff import message_diff
from tests.conftest import make_config

MSH = "MSH|^~\\&|RIS|SITE|PACS|SITE|20240101120000||ORM^O01|CTRL1|P|2.5.1"
PID = "PID|1||P1^^^SITE^MR~S9^^^SSA^SS||DOE^JANE||19700101|F"


def hl7(*segments: str) -> bytes:
    return "\r".join([MSH, *segments]).encode()


def changes(before: bytes, after: bytes, masked: bool = False) -> list[tuple[Any, ...]]:
    return [(c["path"], c["kind"], c["before"], c["after"])
            for c in message_diff(before, after, masked)]


def test_the_same_message_has_no_changes() -> None:
    assert message_diff(hl7(PID), hl7(PID), False) == []


def test_a_component_change_is_named_by_its_component() -> None:
    after = hl7(PID.replace("DOE^JANE", "SMITH^JANE"))
    assert changes(hl7(PID), after) == [("PID-5.1", "changed", "DOE", "SMITH")]


def test_a_change_in_the_second_repetition_names_the_repetition() -> None:
    after = hl7(PID.replace("S9^^^SSA^SS", "S9^^^SSA^MR"))
    assert changes(hl7(PID), after) == [("PID-3[2].5", "changed", "SS", "MR")]


def test_a_simple_field_reads_whole_and_a_header_field_too() -> None:
    before = hl7("OBR|1|PL1||CT1^CT HEAD^L||||||||||||||ACC1")
    after = hl7("OBR|1|PL1||CT1^CT HEAD^L||||||||||||||ACC2").replace(b"|PACS|", b"|EHR|")
    assert changes(before, after) == [("MSH-5", "changed", "PACS", "EHR"),
                                      ("OBR-18", "changed", "ACC1", "ACC2")]


def test_a_subcomponent_without_components_is_under_component_one() -> None:
    before, after = hl7("OBX|1|TX|A||x"), hl7("OBX|1|TX|A||x&y")
    assert changes(before, after) == [("OBX-5.1.2", "changed", "", "y")]


def test_repeated_segments_are_paired_by_occurrence_and_named_with_it() -> None:
    before = hl7("OBX|1|TX|A||first", "NTE|1||note", "OBX|2|TX|B||second")
    after = hl7("OBX|1|TX|A||first", "OBX|2|TX|B||changed", "ZDS|1.2.3^RADBRIDGE")
    assert changes(before, after) == [
        ("OBX[2]-5", "changed", "second", "changed"),
        ("ZDS", "segment added", None, "ZDS|1.2.3^RADBRIDGE"),
        ("NTE", "segment removed", "NTE|1||note", None),
    ]


def test_a_moved_segment_is_named_with_where_it_stood_and_where_it_stands() -> None:
    obr, obx = "OBR|1|PL1|FL1", ["OBX|1|TX|A||a", "OBX|2|TX|B||b", "OBX|3|TX|C||c"]
    before = hl7(obr, "NTE|1|O|disclaimer", "NTE|2|O|demo", *obx)
    after = hl7(obr, *obx, "NTE|1|O|disclaimer", "NTE|2|O|demo")
    # the two NTEs moved as a run: its head says so, the other kept its neighbour
    assert changes(before, after) == [("NTE[1]", "segment moved", "after OBR", "after OBX[3]")]
    zds = "ZDS|1.2.3^RADBRIDGE"
    assert changes(hl7(PID, obr, zds), hl7(PID, zds, obr.replace("PL1", "PL2"))) == [
        ("OBR-2", "changed", "PL1", "PL2"), ("ZDS", "segment moved", "after OBR", "after PID")]


def test_values_are_shown_unescaped() -> None:
    before, after = hl7("NTE|1||a \\T\\ b"), hl7("NTE|1||a \\F\\ c")
    assert changes(before, after) == [("NTE-3", "changed", "a & b", "a | c")]


def test_a_viewer_sees_phi_fields_masked_and_allowed_fields_in_clear() -> None:
    before = hl7(PID, "OBR|1|||CT1^CT HEAD^L", "NTE|1||secret")
    after = hl7(PID.replace("DOE", "SMITH"), "OBR|1|||MR1^MR HEAD^L").replace(b"|PACS|", b"|X|")
    found = changes(before, after, masked=True)
    assert ("MSH-5", "changed", "PACS", "X") in found
    assert ("PID-5.1", "changed", "***", "***") in found
    assert ("OBR-4.1", "changed", "CT1", "MR1") in found  # procedure codes stay in clear
    assert ("NTE", "segment removed", "NTE|1||***", None) in found
    assert "SMITH" not in repr(found) and "secret" not in repr(found)


def test_content_that_is_not_hl7_is_compared_line_by_line_and_binary_by_size() -> None:
    assert changes(b'{\n "a": 1,\n "b": 2\n}', b'{\n "a": 1,\n "b": 3\n}') == [
        ("line 3", "changed", ' "b": 2', ' "b": 3')]
    assert changes(b"\x00\xff\xfe", b"\x00\xff") == [
        ("(content)", "changed", "3 bytes", "2 bytes")]


def test_the_engine_reaches_the_diff_through_the_registry() -> None:
    assert registry.view("message_diff") is message_diff


CONFIG = """
[[channel]]
name = "ris"
source = { type = "mllp", listen = "127.0.0.1:0" }
filter = [{ name = "no-test-traffic", not = { field = "MSH-11", eq = "T" } },
          { expr = 'int(msg["PV1-2"]) > 0' }]
forward_to = [{ to = "ct", when = { field = "OBR-24", eq = "CT" } }, "all"]
[[channel]]
name = "ct"
destination = { type = "file", directory = "/tmp/unused-ct" }
[[channel]]
name = "all"
destination = { type = "file", directory = "/tmp/unused-all" }
"""


def order(mode: str = "P", modality: str = "CT", pv1_class: str = "E") -> Message:
    raw = orm_o01("C1").replace(b"|C1|P|", f"|C1|{mode}|".encode())
    raw = raw.replace(b"||||CR|||", f"|||||{modality}||".encode())
    raw = raw.replace(b"PV1|1|E|", f"PV1|1|{pv1_class}|".encode())
    return Message(1, "ris", 0.0, Status.RECEIVED, raw)


@pytest.mark.parametrize(("msg", "steps"), [
    (order(), [("channel", "filter no-test-traffic", "passed"),
               ("channel", "filter[1]", "error: the expression failed (RuntimeError)")]),
    (order(mode="T"), [("channel", "filter no-test-traffic", "filtered")]),
    (order(pv1_class="1"), [("channel", "filter no-test-traffic", "passed"),
                            ("channel", "filter[1]", "passed"),
                            ("ct", "forward_to[0].when", "passed")]),
    (order(pv1_class="1", modality="MR"), [("channel", "filter no-test-traffic", "passed"),
                                           ("channel", "filter[1]", "passed"),
                                           ("ct", "forward_to[0].when", "filtered")]),
])
def test_a_trace_gives_the_outcome_process_gives_with_each_rule_as_a_step(
        msg: Message, steps: list[tuple[str, str, str]]) -> None:
    config = make_config(CONFIG)
    processor = processor_for(config.channel[0], config)
    outcome, trace = trace_of(processor, msg)
    assert outcome == processor.process(msg)
    assert [(s.scope, s.name, s.result) for s in trace] == steps
    assert all(s.before == s.after == msg.raw for s in trace)


def test_try_prints_each_step_with_its_field_changes_and_the_payload() -> None:
    raw = hl7(PID)
    changed = raw.replace(b"|PACS|", b"|RADBRIDGE|")
    step = StepTrace("channel", "transform[0] set MSH-5", raw, changed, "changed")
    failed = StepTrace("ehr", "transform[1] script site:fix", changed, changed, "error: KeyError")
    tried = Tried(Message(1, "ris", 0.0, Status.RECEIVED, raw, "CTRL1", "ORM^O01"),
                  Outcome(1, Status.ERROR, error="transform[1] failed: KeyError"),
                  [step, failed])
    lines = text_report("orders.hl7", 1, report(tried))
    assert lines[0] == "== orders.hl7 #1: ORM^O01 control id CTRL1"
    assert "  [channel] transform[0] set MSH-5: changed" in lines
    assert '      MSH-5: "PACS" → "RADBRIDGE"' in lines
    assert "  [ehr] transform[1] script site:fix: error: KeyError" in lines
    assert lines[-1] == ("  outcome: ERROR at ehr transform[1] script site:fix: "
                         "transform[1] failed: KeyError")
