"""Lint of transformers and lookup tables (``file:line: key: message``), lookup CSVs beside
the configuration, the README's examples of every step type, and the shipped configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.hl7gen import orm_o01
from engine import registry
from engine.config.schema import lint_text, load_config
from engine.errors import ConfigErrors
from engine.flow.controls import plan_reload
from engine.flow.processors import processor_for
from engine.model import Message, Status

REPO = Path(__file__).resolve().parents[2]

HEAD = """[[channel]]
name = "ris"
source = { type = "mllp", listen = "127.0.0.1:0" }
forward_to = ["out"]
transform = [
"""
TAIL = """]
[[channel]]
name = "out"
destination = { type = "file", directory = "var/out" }
"""
TABLE = """
[[lookup]]
name = "procedures"
file = "procedures.csv"
key = "local"
value = "rpid"
"""


def problems(steps: str, extra: str = "", file: str = "c.toml") -> list[str]:
    return [str(p) for p in lint_text(HEAD + steps + "\n" + TAIL + extra, file)[1]]


def destination_steps(keys: str, extra: str = "") -> str:
    """A channel without steps feeding ``out``, which has *keys* (its filter, transform)."""
    return HEAD.replace("transform = [\n", "") + TAIL.replace("]\n", "", 1) + keys + "\n" + extra


@pytest.mark.parametrize(("step", "expected"), [
    ('{ sett = "MSH-5", value = "EHR" }',
     "channel[0].transform[0].sett: a step has exactly one type of add_segment, copy, delete, "
     "format_date, lower, map, move, replace, script, set, upper (found: unknown step type "
     "'sett')"),
    ('{ set = "PID-x", value = "EHR" }',
     "channel[0].transform[0].set: 'PID-x' is not a field path: unexpected '-x' at position 4: "
     "'-' is followed by a field number (PID-3)"),
    ('{ map = "OBR-4.1", lookup = "nope" }',
     "channel[0].transform[0].lookup: unknown lookup 'nope' (known: none)"),
    ('{ set = "MSH-5", value = 3 }', "channel[0].transform[0].value: must be a string"),
    ('{ set = "MSH-5" }', "channel[0].transform[0]: a set step needs exactly one of value, "
                          "template, expr (found: none)"),
    ('{ replace = "PID-5", pattern = "(" }',
     "channel[0].transform[0].pattern: regex does not compile: missing ), unterminated "
     "subpattern at position 0"),
    (r'{ replace = "PID-5", pattern = "a", with = "\\2" }',
     "channel[0].transform[0].with: the replacement does not fit the pattern: invalid group "
     "reference 2 at position 1"),
    ('{ upper = "PID-5", colour = "red" }',
     "channel[0].transform[0].colour: unknown key (a upper step knows: upper, name, when)"),
    ('{ format_date = "PID-7", to = "dd.mm" }',
     "channel[0].transform[0].to: 'dd.mm' is neither DTM nor a strftime format (%Y%m%d ...)"),
    ('{ set = "MSH-2", value = "x" }',
     "channel[0].transform[0].set: MSH-2 holds the delimiters and is not written"),
    ('{ delete = "MSH" }', "channel[0].transform[0].delete: MSH is the message header and is "
                           "not deleted"),
    ('{ move = "NTE" }', "channel[0].transform[0]: a move step needs exactly one of after, "
                         "before"),
    ('{ set = "MSH-5", template = "{PID-3" }',
     "channel[0].transform[0].template: a lone { or }: a field reference is {PID-3}; write {{ "
     "or }} for a brace"),
    ('{ set = "MSH-5", value = "x", when = { field = "PID-q", eq = "x" } }',
     "channel[0].transform[0].when.field: 'PID-q' is not a field path: unexpected '-q' at "
     "position 4: '-' is followed by a field number (PID-3)"),
    ('{ script = "no_such_module_xyz:fn" }',
     "channel[0].transform[0].script: cannot import no_such_module_xyz: ModuleNotFoundError: "
     "No module named 'no_such_module_xyz'"),
    ('{ script = "json:no_such_fn" }', "channel[0].transform[0].script: json has no function "
                                       "no_such_fn"),
    ('{ script = "json.loads" }', "channel[0].transform[0].script: must name module:function "
                                  "(sitesteps:fix_pid)"),
])
def test_lint_names_the_line_and_key_of_each_bad_step(step: str, expected: str) -> None:
    assert problems(step) == [f"c.toml:6: {expected}"]


def test_a_cel_expression_that_does_not_compile_is_a_lint_error() -> None:
    [problem] = problems("""{ set = "ZAI-1", expr = 'msg["OBR-24"] +' }""")
    assert problem.startswith("c.toml:6: channel[0].transform[0].expr: CEL does not compile")


def test_every_bad_step_is_reported_at_once_on_its_own_line() -> None:
    found = problems('{ set = "PID-x", value = "a" },\n{ copy = "PID-3" },\n{ lower = 5 }')
    assert found == ["c.toml:6: channel[0].transform[0].set: 'PID-x' is not a field path: "
                     "unexpected '-x' at position 4: '-' is followed by a field number (PID-3)",
                     "c.toml:7: channel[0].transform[1]: needs to",
                     "c.toml:8: channel[0].transform[2].lower: must be a string"]


def test_a_lookup_csv_is_read_beside_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "procedures.csv").write_text("# example\nlocal,rpid\nCT1,RPID16\n")
    (tmp_path / "c.toml").write_text(HEAD + '{ map = "OBR-4.1", lookup = "procedures" }\n'
                                     + TAIL + TABLE)
    config = load_config(tmp_path / "c.toml")
    assert config.tables["procedures"].find(("CT1",)) == "RPID16"
    raw = b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.5\rOBR|1|P|F|CT1^CT head"
    out = processor_for(config.channel[0], config).process(Message(1, "ris", 0, Status.RECEIVED,
                                                                   raw))
    assert out.layers["transformed"].endswith(b"OBR|1|P|F|RPID16^CT head")


@pytest.mark.parametrize(("csv", "expected"), [
    (None, "c.toml:14: lookup[0].file: no such file: {dir}/procedures.csv"),
    ("local,other\nCT1,x\n", "c.toml:16: lookup[0].value: no column 'rpid' in the table "
                             "(columns: local, other)"),
    ("local,rpid\nCT1,a\nCT1,b\n", "c.toml:12: lookup[0]: row 2 repeats the key of an earlier "
                                   "row"),
    ("", "c.toml:14: lookup[0].file: the CSV needs a header row naming every column"),
])
def test_lint_checks_a_lookup_file_its_columns_and_its_keys(tmp_path: Path, csv: str | None,
                                                            expected: str) -> None:
    if csv is not None:
        (tmp_path / "procedures.csv").write_text(csv)
    found = problems('{ map = "OBR-4.1", lookup = "procedures" }', TABLE,
                     str(tmp_path / "c.toml"))
    assert found == [expected.format(dir=tmp_path).replace("c.toml", str(tmp_path / "c.toml"),
                                                             1)]


def test_lint_checks_a_map_against_the_tables_columns_and_key(tmp_path: Path) -> None:
    (tmp_path / "procedures.csv").write_text("local,rpid\nCT1,RPID16\n")
    found = problems('{ map = "OBR-4.1", lookup = "procedures", column = "name" },\n'
                     '{ map = ["OBR-4.1", "OBR-4.3"], lookup = "procedures", to = "OBR-4.4" }',
                     TABLE, str(tmp_path / "c.toml"))
    where = str(tmp_path / "c.toml")
    assert found == [
        f"{where}:6: channel[0].transform[0].column: no column 'name' in lookup procedures "
        "(columns: local, rpid)",
        f"{where}:7: channel[0].transform[1].map: lookup procedures is keyed by 1 column(s) "
        "(local): give as many fields"]


def test_a_lookup_names_exactly_one_source() -> None:
    found = problems("", '[[lookup]]\nname = "x"\nfile = "a.csv"\nrows = []\n')
    assert found == ["c.toml:11: lookup[0]: give exactly one of file, rows, table "
                     "(found: file, rows)"]


def test_steps_on_a_non_hl7_destination_are_a_lint_error() -> None:
    text = destination_steps('filter = { field = "MSH-11", eq = "P" }').replace(
        'type = "file", directory = "var/out"', 'type = "webhook", url = "http://127.0.0.1:9/"')
    found = [str(p) for p in lint_text(text, "c.toml")[1]]
    assert found == ["c.toml:8: channel[1].filter: this channel's messages are json: filter "
                     "steps read HL7 v2 (hl7) only"]


def _readme() -> str:
    return (REPO / "README.md").read_text()


def _transformer_section() -> str:
    text = _readme()
    start = text.index("### Transformers, destination filters and lookup tables")
    return text[start:text.index("\n### ", start + 10)]


def test_the_readme_shows_every_step_type_in_a_linted_example() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", _transformer_section(), flags=re.S)
    shown = {kind for block in blocks for kind in re.findall(r"\{ (?:name = \"[^\"]+\", )?(\w+) =",
                                                             block)}
    assert set(registry.steps("hl7")) <= shown
    for block in blocks:  # check_files=False: the CSV files and script live at a site
        assert [str(p) for p in lint_text(block, "channels.toml", check_files=False)[1]] == []


def test_the_readme_script_example_runs(tmp_path: Path) -> None:
    [code] = re.findall(r"```python\n(.*?)```", _transformer_section(), flags=re.S)
    (tmp_path / "sitesteps.py").write_text(code)
    config = tmp_path / "c.toml"
    config.write_text(HEAD + '{ script = "sitesteps:fix_pid" }' + TAIL)
    loaded = load_config(config)
    raw = b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.5\rPID|1|MRN7||DOE^JO"
    out = processor_for(loaded.channel[0], loaded).process(Message(1, "ris", 0, Status.RECEIVED,
                                                                   raw))
    assert out.layers["transformed"].endswith(b"PID|1||MRN7|DOE^JO")


def test_the_shipped_config_adds_radlex_ids_to_what_the_archive_gets() -> None:
    config = load_config(REPO / "channels.toml")
    ris = config.channel_named("ris-orders")
    out = processor_for(ris, config).process(Message(1, "ris-orders", 0, Status.RECEIVED,
                                                     orm_o01("C1")))
    assert out.status == Status.TRANSFORMED, out.error
    [(dest, payload)] = out.deliveries
    obr = next(s for s in payload.split(b"\r") if s.startswith(b"OBR"))
    assert dest == "order-archive"
    assert obr.split(b"|")[4] == b"71046^XR CHEST 2 VIEWS^CPT4^RPID1262^XR CHEST 2 VIEWS^RADLEX"
    assert "transformed" not in out.layers  # the channel itself changes nothing


def _table_config(tmp_path: Path, rows: str) -> Path:
    (tmp_path / "procedures.csv").write_text("local,rpid\n" + rows)
    (tmp_path / "c.toml").write_text(destination_steps(
        'transform = [ { map = "OBR-4.1", lookup = "procedures" } ]', TABLE))
    return tmp_path / "c.toml"


def test_reload_restarts_the_source_whose_destination_uses_a_changed_table(
    tmp_path: Path,
) -> None:
    path = _table_config(tmp_path, "CT1,RPID16\n")
    old = load_config(path)
    assert plan_reload(old, load_config(path)).changed == []
    (tmp_path / "procedures.csv").write_text("local,rpid\nCT1,RPID17\n")
    plan = plan_reload(old, load_config(path))
    assert plan.changed == ["ris"] and plan.unchanged == ["out"]


def test_reload_refuses_a_lookup_file_that_disappeared_naming_it(tmp_path: Path) -> None:
    path = _table_config(tmp_path, "CT1,RPID16\n")
    old = load_config(path)
    (tmp_path / "procedures.csv").unlink()
    with pytest.raises(ConfigErrors) as err:
        load_config(path)
    assert [p.key for p in err.value.problems] == ["lookup[0].file"]
    assert old.tables["procedures"].find(("CT1",)) == "RPID16"  # what runs keeps its table


def test_radbridge_list_names_every_step_type_with_its_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from engine.cli import main

    assert main(["list"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1].rstrip(":") for line in lines] == sorted(registry.steps("hl7"))
    assert "step map [lookup, to, column, on_missing, default]: " in "\n".join(lines)
