"""Routing rules, priority lanes, and lint of [[model]] / [[route]] entries."""

from __future__ import annotations

from typing import Any

from engine.config.inference import RouteConfig
from engine.config.schema import lint_text
from engine.store.inference import LANE_ROUTINE, LANE_STAT, CaseContext
from inference.routing import Router, lane_for


def case(**kw: Any) -> CaseContext:
    base: dict[str, Any] = {"modality": "CR", "body_part": "CHEST", "procedure_code": "CXR2V",
                            "priority": "R", "patient_class": "O", "location": "OPD"}
    base.update(kw)
    return CaseContext(1, "1.2.3", 0, "ready", **base)


def route(models: list[str], **when: Any) -> RouteConfig:
    return RouteConfig.model_validate({"models": models, "when": when})


ROUTER = Router([
    route(["cxr-triage"], modality=["CR", "DX"], body_part="chest"),
    route(["ed-boost", "cxr-triage"], location="ED*"),
    route(["ct-head"], modality="CT", procedure_code=["CTHEAD", "CTBRAIN"]),
    route(["dicom-qa"]),
])


def test_a_chest_radiograph_gets_its_models_and_the_catch_all() -> None:
    plan = ROUTER.route(case())
    assert plan.models == ["cxr-triage", "dicom-qa"]
    assert plan.routes == ["route[0]", "route[3]"] and plan.reason is None


def test_several_routes_add_models_once_each_in_route_order() -> None:
    assert ROUTER.route(case(location="ED-RESUS")).models == ["cxr-triage", "ed-boost",
                                                             "dicom-qa"]


def test_match_values_are_case_insensitive_and_lists_mean_any() -> None:
    assert ROUTER.route(case(modality="dx", body_part="Chest")).models[0] == "cxr-triage"
    assert ROUTER.route(case(modality="CT", body_part="HEAD", procedure_code="CTBRAIN")
                        ).models == ["ct-head", "dicom-qa"]


def test_a_key_the_case_lacks_does_not_match() -> None:
    assert ROUTER.route(case(body_part=None)).models == ["dicom-qa"]


def test_no_matching_route_says_no_model_applies_without_patient_data() -> None:
    plan = Router([route(["cxr-triage"], modality="CR")]).route(case(modality="MR",
                                                                     body_part="KNEE"))
    assert plan.models == []
    assert plan.reason == "no model applies (modality=MR body_part=KNEE procedure=CXR2V)"


def test_stat_orders_and_emergency_patients_take_the_priority_lane() -> None:
    assert lane_for(case()) == LANE_ROUTINE
    assert lane_for(case(priority="S")) == LANE_STAT
    assert lane_for(case(patient_class="E")) == LANE_STAT
    assert lane_for(case(location="ED")) == LANE_STAT
    assert lane_for(case(location="EDUCATION-WING")) == LANE_ROUTINE


def test_routing_by_patient_class_and_priority() -> None:
    router = Router([route(["inpatient-only"], patient_class="I", priority=["S", "A"])])
    assert router.route(case(patient_class="I", priority="A")).models == ["inpatient-only"]
    assert router.route(case(patient_class="I", priority="R")).models == []


BAD = """\
[[route]]
when = { modality = "CR", organ = "lung" }
models = ["a"]

[[model]]
name = "a"
version = "1"
format = "state_dict"
path = "a.pt"
output = { labels = [{ code = "1", display = "x" }] }

[[model]]
name = "b"
version = "1"
format = "torchscript"
path = "b.pt"
sha256 = "abc"
device = "tpu"
output = { labels = [{ code = "1", display = "x", threshold = 2 }] }

[[model]]
name = "c"
version = "1"
format = "builtin"
"""


def test_lint_names_every_bad_model_and_route_key_with_its_line() -> None:
    problems = [str(p) for p in lint_text(BAD, "channels.toml")[1]]
    assert problems == [
        "channels.toml:2: route[0].when.organ: unknown key",
        "channels.toml:5: model[0].architecture: Value error, format = state_dict needs"
        " architecture = one of ['demo_cnn', 'resnet18', 'resnet34']",
        "channels.toml:17: model[1].sha256: String should match pattern '^[0-9a-fA-F]{64}$'",
        "channels.toml:18: model[1].device: String should match pattern"
        " '^(auto|cpu|cuda(:\\d+)?)$'",
        "channels.toml:19: model[1].output.labels[0].threshold: Input should be less than or"
        " equal to 1",
        "channels.toml:21: model[2].builtin: Value error, format = builtin needs builtin = one"
        " of ['demo-cxr', 'dicom-qa']",
    ]


def test_a_builtin_model_may_take_any_name() -> None:
    text = '[[model]]\nname = "qa-ct"\nversion = "1"\nformat = "builtin"\nbuiltin = "dicom-qa"\n'
    config, problems = lint_text(text)
    assert problems == [] and config is not None
    assert config.model[0].builtin_name == "dicom-qa"


REMOTE = """\
[[model]]
name = "triton-cxr"
version = "3"
format = "kserve"
output = { labels = [{ code = "1", display = "x" }] }

[[model]]
name = "local"
version = "1"
format = "builtin"
builtin = "demo-cxr"
remote = { url = "http://triton:8000" }

[[model]]
name = "bad-url"
version = "1"
format = "kserve"
remote = { url = "triton:8000", token = "secret" }
output = { labels = [{ code = "1", display = "x" }] }
"""


def test_lint_names_what_a_remote_model_entry_lacks_or_gets_wrong() -> None:
    problems = [str(p) for p in lint_text(REMOTE, "channels.toml")[1]]
    assert problems == [
        'channels.toml:1: model[0].remote: Value error, format = kserve needs remote = '
        '{ url = "http://host:8000" }',
        "channels.toml:12: model[1].remote: Value error, remote is only for format = kserve,"
        " not builtin",
        "channels.toml:18: model[2].remote.token: a secret does not belong in "
        "channels.toml: use token_env (an environment variable) or token_file (a file) "
        "instead",
        "channels.toml:18: model[2].remote.url: String should match pattern"
        " '^https?://[^\\s/]+(/[^\\s]*)?$'",
    ]


def test_a_remote_model_entry_parses_with_its_defaults() -> None:
    text = ('[[model]]\nname = "triton-cxr"\nversion = "3"\nformat = "kserve"\n'
            'remote = { url = "https://gw.example/kserve", model_version = "2" }\n'
            'output = { labels = [{ code = "1", display = "x" }] }\n')
    config, problems = lint_text(text)
    assert problems == [] and config is not None
    remote = config.model[0].remote
    assert remote is not None and remote.model_version == "2"
    assert (remote.model, remote.binary, remote.input, remote.token_env) == (None, True, None,
                                                                             None)
