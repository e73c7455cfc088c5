"""Channel filters and content routes: each operator, all/any, CEL, and their lint."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config.rules import RuleError, compile_filter, compile_routes, field_language
from engine.config.schema import lint_text
from engine.flow.controls import plan_reload
from engine.flow.processors import processor_for
from engine.flow.steps import StepRunner
from engine.model import Message, Status

ORM = (
    "MSH|^~\\&|RIS|H|RB|H|20260101120000||ORM^O01|C1|{mode}|2.5\r"
    "PID|1||MRN1^^^H^MR~NHS9^^^NHS^NH||DOE^JANE\r"
    "ORC|NW|P1|F1\r"
    "OBR|1|P1|F1|CT-HEAD^CT head||||||||||||||ACC1||||||{modality}\r"
)


def orm(mode: str = "P", modality: str = "CT") -> Any:
    return field_language().parse(ORM.format(mode=mode, modality=modality).encode())


def passes(rule: Any, message: Any) -> bool:
    (compiled,), problems = compile_filter(rule, ("filter",), field_language())
    assert problems == []
    return compiled.test(message)


def problems_of(rule: Any) -> list[tuple[Any, str]]:
    return compile_filter(rule, ("filter",), field_language())[1]


def test_eq_passes_only_the_exact_value() -> None:
    assert passes({"field": "MSH-11", "eq": "P"}, orm("P"))
    assert not passes({"field": "MSH-11", "eq": "P"}, orm("T"))


def test_in_passes_any_listed_value() -> None:
    rule = {"field": "OBR-24", "in": ["CT", "MR"]}
    assert passes(rule, orm(modality="MR")) and not passes(rule, orm(modality="US"))


def test_not_inverts_its_rule() -> None:
    rule = {"not": {"field": "MSH-11", "eq": "T"}}
    assert passes(rule, orm("P")) and not passes(rule, orm("T"))


def test_matches_searches_with_a_regex() -> None:
    rule = {"field": "OBR-4.1", "matches": "^CT-"}
    assert passes(rule, orm()) and not passes({"field": "OBR-4.1", "matches": "^MR-"}, orm())


def test_exists_and_empty_read_a_missing_field_as_empty() -> None:
    assert passes({"field": "PID-3[.5=NH].1", "exists": True}, orm())
    assert passes({"field": "ZDS-1", "empty": True}, orm())
    assert not passes({"field": "ZDS-1", "exists": True}, orm())
    assert passes({"field": "ZDS-1", "exists": False}, orm())


def test_all_needs_every_rule_and_any_needs_one() -> None:
    ct, test = {"field": "OBR-24", "eq": "CT"}, {"field": "MSH-11", "eq": "T"}
    assert not passes({"all": [ct, test]}, orm("P")) and passes({"all": [ct, test]}, orm("T"))
    assert passes({"any": [ct, test]}, orm("P")) and not passes({"any": [test]}, orm("P"))


def test_a_cel_expression_reads_the_fields_it_names() -> None:
    rule = {"expr": 'msg["MSH-11"] != "T" && msg["OBR-24"] in ["CT", "MR"]'}
    assert passes(rule, orm("P", "MR"))
    assert not passes(rule, orm("T", "MR")) and not passes(rule, orm("P", "US"))


def test_a_cel_expression_that_is_not_boolean_fails_the_message_with_the_reason() -> None:
    (compiled,), _ = compile_filter({"expr": 'msg["MSH-11"]'}, ("filter",), field_language())
    with pytest.raises(RuleError, match="not a boolean"):
        compiled.test(orm())


def test_each_rule_of_a_list_is_named_by_its_name_or_its_position() -> None:
    rules, _ = compile_filter(
        [{"field": "MSH-11", "eq": "P"}, {"name": "ct-only", "field": "OBR-24", "eq": "CT"}],
        ("filter",),
        field_language(),
    )
    assert [r.name for r in rules] == ["filter[0]", "ct-only"]


@pytest.mark.parametrize(
    ("rule", "key", "message"),
    [
        ({"field": "PID-", "eq": "x"}, ("filter", "field"), "is not a field path"),
        ({"field": "OBR-24", "matches": "("}, ("filter", "matches"), "regex does not compile"),
        ({"expr": 'msg["A"] =='}, ("filter", "expr"), "CEL does not compile"),
        ({"expr": "other == 1"}, ("filter", "expr"), "unknown variable 'other'"),
        ({"expr": 'msg["PID-"] == ""'}, ("filter", "expr"), "is not a field path"),
        ({"field": "MSH-11", "like": "T"}, ("filter", "like"), "unknown operator 'like'"),
        ({"field": "MSH-11"}, ("filter",), "exactly one operator"),
        ({"field": "MSH-11", "in": "T"}, ("filter", "in"), "must be a list of strings"),
        ({"all": []}, ("filter", "all"), "non-empty list"),
        (
            {"not": {"any": [{"field": "X-1", "eq": ""}]}},
            ("filter", "not", "any", 0, "field"),
            "path",
        ),
    ],
)
def test_a_bad_rule_is_a_problem_at_its_key(rule: Any, key: Any, message: str) -> None:
    problems = problems_of(rule)
    assert any(loc == key and message in text for loc, text in problems), problems


CONFIG = """\
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
{filter}
forward_to = [{{ to = "ct-mr", when = {{ field = "OBR-24", in = ["CT", "MR"] }} }},
              {{ to = "{rest}", when = 'msg["OBR-24"] != "CT" && msg["OBR-24"] != "MR"' }}]

[[channel]]
name = "ct-mr"
destination = {{ type = "file", directory = "out/ct" }}

[[channel]]
name = "rest"
destination = {{ type = "file", directory = "out/rest" }}
"""


def lint(filter_line: str = "", rest: str = "rest") -> tuple[Any, list[str]]:
    config, problems = lint_text(CONFIG.format(filter=filter_line, rest=rest), "c.toml")
    return config, [str(p) for p in problems]


def test_lint_reports_filter_problems_as_file_line_key_message() -> None:
    _, problems = lint('filter = [{ field = "MSH-11", eq = "P" }, { field = "OBR-24", x = 1 }]')
    assert problems == [
        "c.toml:4: channel[0].filter[1]: a field test needs exactly one operator of "
        "eq, in, matches, exists, empty (found: none)",
        "c.toml:4: channel[0].filter[1].x: unknown operator 'x' (known: eq, in, matches, "
        "exists, empty, not, all, any, expr)",
    ]


def test_lint_reports_a_route_to_an_unknown_channel_at_its_to_key() -> None:
    _, problems = lint(rest="nowhere")
    assert problems == ["c.toml:6: channel[0].forward_to[1].to: unknown channel 'nowhere'"]


def test_lint_reports_a_route_whose_cel_does_not_compile() -> None:
    text = CONFIG.format(filter="", rest="rest").replace('!= "MR"', "!= ")
    _, problems = lint_text(text, "c.toml")
    assert [(p.line, p.key) for p in problems] == [(6, "channel[0].forward_to[1].when")]
    assert "CEL does not compile" in problems[0].message


def message(raw: str) -> Message:
    return Message(1, "ris", 0.0, Status.RECEIVED, raw.encode())


def test_the_channel_processor_filters_and_routes_by_content() -> None:
    config, problems = lint('filter = { name = "no-test", not = { field = "MSH-11", eq = "T" } }')
    assert problems == []
    processor = processor_for(config.channel[0], config)
    assert isinstance(processor, StepRunner)
    filtered = processor.process(message(ORM.format(mode="T", modality="CT")))
    assert filtered.status == Status.FILTERED and filtered.error == "filtered by no-test"
    assert filtered.deliveries == [] and filtered.domain is None
    ct = processor.process(message(ORM.format(mode="P", modality="CT")))
    us = processor.process(message(ORM.format(mode="P", modality="US")))
    assert [d for d, _ in ct.deliveries] == ["ct-mr"]
    assert [d for d, _ in us.deliveries] == ["rest"]


def test_a_channel_without_filter_or_routes_keeps_its_plain_processor() -> None:
    config, _ = lint_text(CONFIG.format(filter="", rest="rest").split("forward_to")[0])
    assert not isinstance(processor_for(config.channel[0], config), StepRunner)


def test_routes_name_their_destination() -> None:
    routes, problems = compile_routes(
        ["a", {"to": "b", "when": 'msg["OBR-24"] == "CT"'}], ("forward_to",), field_language()
    )
    assert problems == [] and list(routes) == ["b"] and routes["b"].test(orm(modality="CT"))


def test_a_route_whose_expression_fails_puts_the_message_in_error_naming_the_route() -> None:
    config, problems = lint_text(
        CONFIG.format(filter="", rest="rest").replace('msg["OBR-24"] != "CT" &&', "1 / 0 == 1 &&")
    )
    assert problems == []
    outcome = processor_for(config.channel[0], config).process(
        message(ORM.format(mode="P", modality="US"))
    )
    assert outcome.status == Status.ERROR and outcome.deliveries == []
    reason = "the expression failed (ZeroDivisionError)"  # its type only: no field values
    assert outcome.error == f"rule forward_to[1].when failed: {reason}"


def test_a_changed_filter_redeploys_the_channel_on_reload() -> None:
    old, _ = lint('filter = { field = "MSH-11", eq = "P" }')
    new, _ = lint('filter = { field = "MSH-11", in = ["P", "D"] }')
    plan = plan_reload(old, new)
    assert plan.changed == ["ris"] and plan.unchanged == ["ct-mr", "rest"]
