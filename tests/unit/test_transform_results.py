"""Outbound shaping: a destination's steps change the ORU (or order update) the results channel
built for it, and what leaves is validated again with hl7apy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config.schema import lint_text
from engine.flow.processors import processor_for
from engine.model import Message, Status
from tests.fixtures.reports import sample_report


def results_config(ehr_steps: str, extra: str = "") -> str:
    return f"""
[[channel]]
name = "ai-results"
source = {{ type = "ai_results" }}
forward_to = ["ehr", "other-ehr"]
{extra}
[[channel]]
name = "ehr"
destination = {{ type = "mllp", endpoint = "127.0.0.1:6661" }}
transform = [
{ehr_steps}
]
[[channel]]
name = "other-ehr"
destination = {{ type = "mllp", endpoint = "127.0.0.1:6662" }}
"""


@pytest.fixture(scope="module")
def report_message(tmp_path_factory: pytest.TempPathFactory) -> Message:
    report = sample_report(Path(tmp_path_factory.mktemp("report")))
    return Message(1, "ai-results", 0.0, Status.RECEIVED, report.to_json())


def process(text: str, msg: Message) -> Any:
    config, problems = lint_text(text, "c.toml")
    assert problems == [], [str(p) for p in problems]
    assert config is not None
    return processor_for(config.channel[0], config).process(msg)


def segments(payload: bytes | None) -> list[str]:
    assert payload is not None
    return payload.decode().split("\r")


def test_an_ehr_gets_its_own_msh_5_6_and_the_ai_disclaimer_after_the_results(
    report_message: Message,
) -> None:
    outcome = process(results_config("""
  { set = "MSH-5", value = "EPIC" },
  { set = "MSH-6", value = "MAIN-HOSP" },
  { name = "disclaimer last", move = "NTE", after = "OBX" },
  { name = "no notes", delete = "OBX[3]" },
"""), report_message)
    assert outcome.status == Status.TRANSFORMED, outcome.error
    sent = dict(outcome.deliveries)
    ehr, other = segments(sent["ehr"]), segments(sent["other-ehr"])
    assert ehr[0].split("|")[4:6] == ["EPIC", "MAIN-HOSP"]
    assert [s[:3] for s in ehr] == ["MSH", "PID", "ORC", "OBR", "OBX", "OBX", "OBX", "OBX", "NTE"]
    assert not any("AINOTE" in s for s in ehr)
    # the other EHR gets the ORU as built: the disclaimer before the results, every row
    assert [s[:3] for s in other][4] == "NTE" and other[0].split("|")[4:6] == ["", ""]
    assert outcome.layers["oru"] == sent["other-ehr"]


def test_an_oru_made_invalid_by_a_destinations_steps_is_never_sent(
    report_message: Message,
) -> None:
    outcome = process(results_config('{ set = "PID-7", value = "1970-01-01" }'), report_message)
    assert outcome.status == Status.ERROR and outcome.deliveries == []
    assert outcome.error is not None and outcome.error.startswith(
        "the payload for ehr is invalid after its steps: hl7apy rejects the message: PID-7")


def test_a_destination_filter_on_the_oru_drops_only_that_ehr(report_message: Message) -> None:
    text = results_config('{ set = "MSH-5", value = "EPIC" }').replace(
        'endpoint = "127.0.0.1:6661" }',
        'endpoint = "127.0.0.1:6661" }\nfilter = { name = "stat-only", field = "OBR-27.6", '
        'eq = "S" }')
    outcome = process(text, report_message)
    assert [d for d, _ in outcome.deliveries] == ["other-ehr"]
    assert outcome.layers["filtered-destinations"] == b'{"ehr": "filtered by stat-only"}'


def test_steps_on_a_destination_that_gets_fhir_are_a_lint_error() -> None:
    text = """
[[channel]]
name = "ai-results"
source = { type = "ai_results" }
forward_to = ["fhir"]
[[channel]]
name = "fhir"
destination = { type = "fhir_rest", base_url = "http://127.0.0.1:9/fhir" }
transform = [ { set = "MSH-5", value = "X" } ]
"""
    problems = [str(p) for p in lint_text(text, "c.toml")[1]]
    assert problems == ["c.toml:9: channel[1].transform: this channel's messages are fhir: "
                        "transform steps read HL7 v2 (hl7) only"]


def test_the_ris_order_update_is_shaped_and_checked_again(report_message: Message) -> None:
    text = results_config('{ set = "MSH-5", value = "RIS" }').replace(
        'source = { type = "ai_results" }', 'source = { type = "ai_results", '
        'order_updates_to = ["ehr"] }')
    outcome = process(text, report_message)
    assert outcome.status == Status.TRANSFORMED, outcome.error
    update = segments(dict(outcome.deliveries)["ehr"])
    assert update[0].split("|")[4] == "RIS" and update[0].split("|")[8].startswith("ORM^O01")
    broken = process(text.replace('{ set = "MSH-5", value = "RIS" }', '{ delete = "ORC" }'),
                     report_message)
    assert broken.status == Status.ERROR and broken.deliveries == []
    assert broken.error == ("the payload for ehr is invalid after its steps: ORC segment is "
                            "missing or out of order")
