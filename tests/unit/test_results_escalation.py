"""Escalation rules: which AI finding raises a case's reading priority, and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.results import EscalationRule
from engine.results.channel import alert_payload, escalate
from radbridge_fhir.task import priority_task
from tests.fixtures.reports import sample_report


def test_default_rules_raise_a_critical_finding_to_stat(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    priority, reason, flags = escalate(report, [])
    assert priority == "STAT"
    assert reason == "AI cxr-triage 1.2.0: Pneumothorax 0.93"
    assert [(f["code"], f["probability"]) for f in flags] == [
        (f.code, f.probability) for f in report.findings]


def test_a_rule_needs_its_probability_and_model(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    strict = [EscalationRule(code="36118008", min_probability=0.95, priority="STAT")]
    assert escalate(report, strict)[:2] == ("ROUTINE", None)
    other_model = [EscalationRule(code="36118008", model="other", priority="STAT")]
    assert escalate(report, other_model)[:2] == ("ROUTINE", None)
    effusion = [EscalationRule(code="60046008", min_probability=0.6, priority="URGENT")]
    assert escalate(report, effusion) == (
        "URGENT", "AI cxr-triage 1.2.0: Pleural effusion 0.61", escalate(report, [])[2])


def test_escalation_never_lowers_the_order_priority(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    assert report.order is not None
    report.order.priority = "S"
    assert escalate(report, [])[:2] == ("STAT", None)  # already STAT: AI raised nothing


def test_no_findings_no_escalation(tmp_path: Path) -> None:
    assert escalate(sample_report(tmp_path, findings=False), [])[:2] == ("ROUTINE", None)


def test_a_rule_without_code_or_criticality_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a code or a criticality"):
        EscalationRule(priority="STAT")


def test_the_alert_names_the_case_not_the_patient(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    alert = json.loads(alert_payload(report, "STAT", "why"))
    assert (alert["accession"], alert["priority"], alert["study_uid"]) == (
        report.accession, "STAT", report.study_uid)
    text = json.dumps(alert)
    assert report.patient is not None
    for phi in (report.patient.family, report.patient.given, report.patient.birth_date,
                report.patient.patient_id):
        assert phi not in text


def test_the_fhir_priority_task_points_at_the_study_and_patient(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    bundle = {"entry": [
        {"fullUrl": "urn:uuid:study", "resource": {"resourceType": "ImagingStudy"}},
        {"fullUrl": "urn:uuid:patient", "resource": {"resourceType": "Patient"}}]}
    entry = priority_task(bundle, report, "STAT", "AI says so")
    task = entry["resource"]
    assert (task["priority"], task["focus"], task["for"]) == (
        "stat", {"reference": "urn:uuid:study"}, {"reference": "urn:uuid:patient"})
    assert entry["request"]["ifNoneExist"].endswith(f"{report.report_id}-priority")
    assert priority_task(bundle, report, "STAT", "AI says so") == entry  # deterministic
