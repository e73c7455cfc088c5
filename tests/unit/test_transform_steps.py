"""Transformer steps: one golden case per step type (input, config, expected output), the
errors a step can end a message with, the dry-run trace, and a property: steps never crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config.schema import Config, lint_text
from engine.flow.processors import processor_for, runner_for
from engine.flow.steps import StepRunner
from engine.flow.trace import CHANGED, FILTERED, PASSED, UNCHANGED
from engine.model import Message, Status

ORM = (
    "MSH|^~\\&|RIS|HOSP|RB|AI|20260101120000||ORM^O01|C1|P|2.5\r"
    "PID|1||MRN1^^^HOSP^MR~NHS9^^^NHS^NH||doe^jane||19700102|F\r"
    "ORC|NW|P1|F1\r"
    "OBR|1|P1|F1|CT1^CT head^LOCAL||||||||||||||MR^2006-7||||||CT\r"
    "OBX|1|ST|A^First||x1\r"
    "OBX|2|ST|B^Second||y2\r"
    "NTE|1||a note\r"
)


def config(transform: str, extra: str = "", dest_transform: str = "",
           dest_filter: str = "") -> str:
    return f"""
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["out"]
transform = [
{transform}
]
[[channel]]
name = "out"
destination = {{ type = "mllp", endpoint = "127.0.0.1:6661" }}
{dest_filter}
{"transform = [" + dest_transform + "]" if dest_transform else ""}
{extra}
"""


def lint_ok(text: str, tmp: Path | None = None) -> Config:
    file = str(tmp / "c.toml") if tmp is not None else "c.toml"
    conf, problems = lint_text(text, file)
    assert problems == [], [str(p) for p in problems]
    assert conf is not None
    return conf


def message(raw: str = ORM) -> Message:
    return Message(1, "ris", 0.0, Status.RECEIVED, raw.encode())


def run(transform: str, raw: str = ORM, extra: str = "") -> Any:
    conf = lint_ok(config(transform, extra))
    return processor_for(conf.channel[0], conf).process(message(raw))


def transformed(transform: str, raw: str = ORM, extra: str = "") -> list[str]:
    outcome = run(transform, raw, extra)
    assert outcome.status == Status.TRANSFORMED, outcome.error
    return outcome.layers["transformed"].decode().split("\r")


def segment(lines: list[str], seg_id: str, n: int = 1) -> str:
    return [line for line in lines if line.startswith(seg_id)][n - 1]


LOOKUP = """
[[lookup]]
name = "procedures"
rows = [ { local = "CT1", rpid = "RPID16", radlex_name = "CT HEAD WO IV CONTRAST" } ]
key = "local"
value = "rpid"
"""


def test_set_writes_a_literal_value_as_hl7_text() -> None:
    lines = transformed('{ set = "MSH-5", value = "EHR^X" }')
    assert lines[0] == "MSH|^~\\&|RIS|HOSP|EHR^X|AI|20260101120000||ORM^O01|C1|P|2.5"


def test_set_fills_a_template_with_escaped_field_values() -> None:
    lines = transformed('{ set = "OBR-13", template = "{PID-3} for {OBR-18!}" }')
    assert segment(lines, "OBR").split("|")[13] == "MRN1 for MR\\S\\2006-7"


def test_set_writes_what_a_cel_expression_gives() -> None:
    lines = transformed("""{ set = "ZAI-1", expr = 'msg["OBR-24"] + "-" + msg["PID-8"]' }""")
    assert lines[-1] == "ZAI|CT-F"


def test_set_without_an_occurrence_writes_every_occurrence() -> None:
    lines = transformed('{ set = "OBX-11", value = "F" }')
    assert [segment(lines, "OBX", n).split("|")[11] for n in (1, 2)] == ["F", "F"]


def test_copy_copies_a_whole_field_with_its_components() -> None:
    lines = transformed('{ copy = "OBR-4", to = "OBR-44" }')
    assert segment(lines, "OBR").split("|")[44] == "CT1^CT head^LOCAL"


def test_copy_within_each_occurrence_of_a_segment() -> None:
    lines = transformed('{ copy = "OBX-3.2", to = "OBX-4" }')
    assert [segment(lines, "OBX", n).split("|")[4] for n in (1, 2)] == ["First", "Second"]


def test_map_translates_a_code_through_a_lookup_table() -> None:
    lines = transformed('{ map = "OBR-4.1", lookup = "procedures", to = "OBR-4.4" },\n'
                        '{ map = "OBR-4.1", lookup = "procedures", column = "radlex_name", '
                        'to = "OBR-4.5" }', extra=LOOKUP)
    assert segment(lines, "OBR").split("|")[4] == "CT1^CT head^LOCAL^RPID16^CT HEAD WO IV CONTRAST"


def test_map_in_place_keeps_the_fields_other_components() -> None:
    lines = transformed('{ map = "OBR-4", lookup = "procedures" }', extra=LOOKUP)
    assert segment(lines, "OBR").split("|")[4] == "RPID16^CT head^LOCAL"


def test_map_on_missing_keep_default_error_and_filter() -> None:
    raw = ORM.replace("CT1^", "XX9^")
    step = '{{ map = "OBR-4.1", lookup = "procedures", on_missing = "{how}"{more} }}'
    assert run(step.format(how="keep", more=""), raw, LOOKUP).layers == {}
    lines = transformed(step.format(how="default", more=', default = "UNMAPPED"'), raw, LOOKUP)
    assert segment(lines, "OBR").split("|")[4].startswith("UNMAPPED^")
    error = run(step.format(how="error", more=""), raw, LOOKUP)
    assert error.status == Status.ERROR and error.error == (
        "step transform[0] map OBR-4.1 failed: lookup procedures has no row for the key")
    filtered = run(step.format(how="filter", more=""), raw, LOOKUP)
    assert filtered.status == Status.FILTERED and filtered.deliveries == []
    assert filtered.error == ("filtered by step transform[0] map OBR-4.1: lookup procedures "
                              "has no row for the key")


def test_map_with_a_key_of_two_columns() -> None:
    table = """
[[lookup]]
name = "by-system"
key = ["system", "code"]
value = "rpid"
rows = [
  { system = "LOCAL", code = "CT1", rpid = "RPID16" },
  { system = "CPT", code = "CT1", rpid = "NO" },
]
"""
    lines = transformed('{ map = ["OBR-4.3", "OBR-4.1"], lookup = "by-system", to = "OBR-4.4" }',
                        extra=table)
    assert segment(lines, "OBR").split("|")[4] == "CT1^CT head^LOCAL^RPID16"


@pytest.mark.parametrize(("path", "expected"), [
    ("NTE", None),
    ("OBX[1]", "OBX|2|ST|B^Second||y2"),
    ("PID-3[.5=NH]", "PID|1||MRN1^^^HOSP^MR||doe^jane||19700102|F"),
    ("PID-8", "PID|1||MRN1^^^HOSP^MR~NHS9^^^NHS^NH||doe^jane||19700102|"),
])
def test_delete_removes_segments_and_repetitions_and_clears_fields(path: str,
                                                                   expected: str | None) -> None:
    lines = transformed(f'{{ delete = "{path}" }}')
    if expected is None:
        assert not any(line.startswith("NTE") for line in lines)
    else:
        assert expected in lines and len(lines) == (6 if path == "OBX[1]" else 7)


def test_add_segment_goes_after_the_named_segment_with_its_references_filled() -> None:
    lines = transformed('{ add_segment = "ZRB|{MSH-10}|{{braced}}", after = "PID" }')
    assert lines[2] == "ZRB|C1|{braced}"


def test_add_segment_without_after_goes_at_the_end() -> None:
    assert transformed('{ add_segment = "ZRB|1" }')[-1] == "ZRB|1"


def test_move_puts_segments_after_the_last_or_before_the_first_of_another() -> None:
    lines = transformed('{ move = "NTE", after = "OBR" }')
    assert lines[4] == "NTE|1||a note"
    lines = transformed('{ move = "OBX[2]", before = "OBX[1]" }')
    assert [line[:5] for line in lines[4:6]] == ["OBX|2", "OBX|1"]


def test_format_date_reads_and_writes_hl7_dtm_and_strftime_formats() -> None:
    lines = transformed('{ format_date = "PID-7", to = "%d.%m.%Y" }')
    assert segment(lines, "PID").split("|")[7] == "02.01.1970"
    raw = ORM.replace("19700102", "02/01/1970")
    lines = transformed('{ format_date = "PID-7", from = "%d/%m/%Y", to = "DTM" }', raw)
    assert segment(lines, "PID").split("|")[7] == "19700102"
    lines = transformed('{ format_date = "MSH-7", to = "%Y-%m-%dT%H:%M" }')
    assert lines[0].split("|")[6] == "2026-01-01T12:00"


def test_format_date_that_cannot_read_the_value_errors_or_keeps_it() -> None:
    raw = ORM.replace("19700102", "1970-01-02")
    outcome = run('{ format_date = "PID-7", to = "%d.%m.%Y" }', raw)
    assert outcome.status == Status.ERROR
    assert outcome.error == ("step transform[0] format_date PID-7 failed: PID-7: the value is "
                             "not an HL7 DTM (YYYYMMDDHHMMSS)")  # the value itself is not quoted
    kept = run('{ format_date = "PID-7", to = "%d.%m.%Y", on_invalid = "keep" }', raw)
    assert kept.status == Status.TRANSFORMED and kept.layers == {}


def test_replace_substitutes_a_regex_in_every_part_of_a_field() -> None:
    lines = transformed(r'{ replace = "OBX-5", pattern = "([a-z])(\\d)", with = "\\2\\1" }')
    assert [segment(lines, "OBX", n).split("|")[5] for n in (1, 2)] == ["1x", "2y"]


def test_upper_and_lower_change_every_component_or_one() -> None:
    lines = transformed('{ upper = "PID-5" }')
    assert segment(lines, "PID").split("|")[5] == "DOE^JANE"
    lines = transformed('{ lower = "OBR-4.2" }')
    assert segment(lines, "OBR").split("|")[4] == "CT1^ct head^LOCAL"


def test_a_script_step_takes_and_returns_the_message(tmp_path: Path) -> None:
    (tmp_path / "sitesteps_ok.py").write_text(
        "def tag(msg):\n    msg.set('ZSC-1', msg.get('PID-3') + '!')\n    return msg\n")
    conf = lint_ok(config('{ name = "tag it", script = "sitesteps_ok:tag" }'), tmp_path)
    outcome = processor_for(conf.channel[0], conf).process(message())
    assert outcome.layers["transformed"].decode().split("\r")[-1] == "ZSC|MRN1!"


def test_a_script_that_raises_ends_the_message_in_error_with_its_type_and_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "sitesteps_bad.py").write_text(
        "def boom(msg):\n    raise ValueError('no ' + msg.get('PID-5'))\n")
    conf = lint_ok(config('{ name = "boom", script = "sitesteps_bad:boom" }'), tmp_path)
    outcome = processor_for(conf.channel[0], conf).process(message())
    assert outcome.status == Status.ERROR and outcome.deliveries == []
    assert outcome.error == "step boom failed: ValueError: no doe"
    assert "doe" not in caplog.text  # kept on the message, never logged


def test_a_step_with_when_runs_only_when_its_rule_passes() -> None:
    step = '{ set = "ZAI-1", value = "CT", when = { field = "OBR-24", eq = "%s" } }'
    assert transformed(step % "CT")[-1] == "ZAI|CT"
    assert run(step % "MR").layers == {}


def test_the_processor_and_destinations_see_the_transformed_message() -> None:
    conf = lint_ok(config('{ set = "MSH-5", value = "EHR" }'))
    outcome = processor_for(conf.channel[0], conf).process(message())
    [(dest, payload)] = outcome.deliveries
    assert dest == "out" and payload == outcome.layers["transformed"]


def test_steps_that_change_nothing_store_no_layer_and_send_the_stored_raw() -> None:
    outcome = run('{ set = "MSH-5", value = "RB" }')
    assert outcome.layers == {} and outcome.deliveries == [("out", None)]


def test_destination_steps_shape_only_what_that_destination_gets() -> None:
    conf = lint_ok(config('{ set = "MSH-5", value = "EHR" }',
                          dest_transform='{ set = "MSH-6", value = "ARCHIVE" }'))
    outcome = processor_for(conf.channel[0], conf).process(message())
    [(_, payload)] = outcome.deliveries
    assert payload is not None and payload.startswith(b"MSH|^~\\&|RIS|HOSP|EHR|ARCHIVE|")
    assert outcome.layers["transformed"].startswith(b"MSH|^~\\&|RIS|HOSP|EHR|AI|")


def test_a_destination_filter_drops_that_delivery_and_says_why() -> None:
    conf = lint_ok(config('{ set = "MSH-5", value = "EHR" }',
                          dest_filter='filter = { name = "mr-only", field = "OBR-24", eq = "MR" }'))
    outcome = processor_for(conf.channel[0], conf).process(message())
    assert outcome.status == Status.TRANSFORMED and outcome.deliveries == []
    assert outcome.layers["filtered-destinations"] == b'{"out": "filtered by mr-only"}'


def test_a_failing_destination_step_names_the_destination() -> None:
    conf = lint_ok(config('{ set = "MSH-5", value = "EHR" }', extra=LOOKUP,
                          dest_transform='{ map = "PID-8", lookup = "procedures", '
                                         'on_missing = "error" }'))
    outcome = processor_for(conf.channel[0], conf).process(message())
    assert outcome.status == Status.ERROR and outcome.deliveries == []
    assert outcome.error == ("step transform[0] map PID-8 of out failed: lookup procedures "
                             "has no row for the key")


def test_trace_shows_every_rule_and_step_with_its_effect() -> None:
    conf = lint_ok(config('{ name = "ehr", set = "MSH-5", value = "EHR" },\n'
                          '{ set = "MSH-6", value = "AI" }',
                          dest_filter='filter = { field = "OBR-24", eq = "CT" }',
                          dest_transform='{ set = "MSH-6", value = "ARCH" }'))
    runner = runner_for(conf.channel[0], conf)
    outcome, steps = runner.trace(message())
    assert outcome == runner.process(message())
    assert [(s.scope, s.name, s.result) for s in steps] == [
        ("channel", "ehr", CHANGED),
        ("channel", "transform[1] set MSH-6", UNCHANGED),
        ("out", "filter", PASSED),
        ("out", "transform[0] set MSH-6", CHANGED),
    ]
    assert steps[0].before == ORM.strip().encode() and b"|EHR|AI|" in steps[0].after
    assert b"|EHR|ARCH|" in steps[3].after


def test_trace_of_a_filtered_message_ends_at_the_rule() -> None:
    text = config('{ set = "MSH-5", value = "EHR" }').replace(
        'forward_to = ["out"]', 'forward_to = ["out"]\nfilter = { field = "MSH-11", eq = "T" }')
    conf = lint_ok(text)
    outcome, steps = runner_for(conf.channel[0], conf).trace(message())
    assert outcome.status == Status.FILTERED
    assert [(s.name, s.result) for s in steps] == [("filter", FILTERED)]


def test_a_channel_without_steps_still_traces_through_runner_for() -> None:
    conf = lint_ok(config("").replace("transform = [\n\n]", ""))
    runner = runner_for(conf.channel[0], conf)
    assert isinstance(runner, StepRunner) and runner.plain
    assert runner.trace(message()) == (runner.process(message()), [])


EVERY_STEP = """
{ set = "MSH-5", value = "EHR" },
{ set = "OBR-13", template = "{PID-3} {OBR-4.2}" },
{ set = "ZAI-1", expr = 'msg["OBR-24"]' },
{ copy = "OBR-18!", to = "OBR-20" },
{ map = "OBR-4.1", lookup = "procedures", to = "OBR-4.4" },
{ delete = "PID-3[2]" },
{ add_segment = "ZRB|{MSH-10}", after = "PID" },
{ move = "NTE", after = "OBR" },
{ format_date = "PID-7", to = "DTM", on_invalid = "keep" },
{ format_date = "OBR-7", from = "%Y%m%d", to = "%d.%m.%Y", on_invalid = "keep" },
{ replace = "PID-5", pattern = "[^A-Za-z]", with = "" },
{ upper = "PID-5" },
{ lower = "OBX-5" },
"""

SEGMENT_TEXT = st.text(alphabet=st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789|^~\\&.-{} \n\ré\x0b\x1c"), max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["PID", "OBR", "OBX", "NTE", "ZDS", "MSH", "X1"]),
                          SEGMENT_TEXT), max_size=8))
def test_steps_never_crash_on_arbitrary_segment_text(segments: list[tuple[str, str]]) -> None:
    conf = _EVERY
    raw = "MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.5\r" + "\r".join(
        f"{seg}|{text}" for seg, text in segments)
    outcome = processor_for(conf.channel[0], conf).process(message(raw))
    # a step may refuse a message (ERROR with a reason) but never raises
    assert outcome.status in (Status.TRANSFORMED, Status.ERROR, Status.FILTERED)
    if outcome.status == Status.ERROR:
        assert outcome.error and outcome.error.startswith("step ")


_EVERY = lint_ok(config(EVERY_STEP, LOOKUP))


def test_a_processor_is_never_built_with_a_step_it_cannot_compile() -> None:
    conf = lint_ok(config('{ map = "OBR-4.1", lookup = "procedures" }', LOOKUP))
    broken = conf.model_copy(update={"lookup": []})  # the table gone since lint
    with pytest.raises(ValueError, match="channel ris: transform.0.lookup: unknown lookup"):
        processor_for(broken.channel[0], broken)
