"""Results out: finished inference → one durable AI report → ORU, FHIR, SR, worklist, alerts.

``Engine.result_listeners`` hear when every inference job of a case is final
(at least once). The ``ai_results`` source turns that into a message on its
channel: the ``AIReport`` (JSON) of the case, with its patient, order, source
instances and the findings that may be sent (shadow-mode findings never are).
Storing it is the commit point; from there the channel's pipeline runs
``ResultsProcessor`` like any other processor, so the outputs are built off the
event loop, each destination's payload is queued in the same transaction as the
worklist update, and delivery, retries, replay (``radbridge messages
reprocess``) and the dashboard work as they do for HL7.

What each destination gets follows from what its type sends (``sink`` in the
registry): ``hl7`` → ORU^R01 (or, for ``order_updates_to``, the RIS order
update when AI raised the priority), ``fhir`` → a transaction Bundle,
``dicom`` → one TID 1500 SR per model, ``json`` → an alert when the case was
raised to ``alert_priority``. A build or validation failure ends the message
as ERROR with the reason: visible, fixable, reprocessable; nothing invalid
leaves.

``FinalReportsProcessor`` (``process = "final_reports"``) reads the
radiologist's final ORU from the RIS and compares its codes with the AI
findings of the case (agreement per model version: the drift signal).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from engine.config_results import DEFAULT_ESCALATION, AIResultsSourceConfig, EscalationRule
from engine.logs import event
from engine.model import Finding, Message, Status
from engine.registry import register
from engine.results_model import REPORT_MESSAGE_TYPE, AIReport, ModelRun
from engine.store.base import MessageQuery, NewMessage, Outcome, Store
from engine.store.inference import CaseResult, JobState
from engine.store.results import (
    FinalReportEvent,
    WorklistUpdate,
    order_priority,
    priority_rank,
)

log = logging.getLogger("radbridge.results")

# A priority as the HL7 order priority code of an order update (ORC-7.6 / TQ1-9).
HL7_PRIORITY = {"STAT": "S", "URGENT": "A", "ROUTINE": "R"}


# -- the source: finished cases become stored reports ----------------------------------------

@register("source", "ai_results", AIResultsSourceConfig,
          "finished AI inference as results (ORU, FHIR, SR, worklist, alerts)", sink="json")
class AIResultsSource:
    """The channel's source in name only: it listens on no socket. The engine gives the
    channel's ``ResultsIngest`` (its *sink*) to ``Engine.result_listeners`` from engine start
    (``Engine._prepare_results``), so a report is stored, and the channel's pipeline woken,
    as soon as a case's inference is final, even while this source is stopped."""

    address = None

    def __init__(self, name: str, config: AIResultsSourceConfig, sink: ResultsIngest) -> None:
        self.name = name
        self.config = config
        self.sink = sink

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class ResultsIngest:
    """Builds the ``AIReport`` of a finished case and stores it (idempotent per revision);
    ``submit`` is the result listener, ``on_stored`` wakes the channel's pipeline."""

    def __init__(self, channel: str, store: Store, models: Sequence[Any],
                 on_stored: Callable[[], None]) -> None:
        self.channel = channel
        self.store = store
        self.models = {m.name: m for m in models}  # ModelConfig by name
        self.on_stored = on_stored
        self.stored = 0

    def model_runs(self, result: CaseResult) -> list[ModelRun]:
        runs = []
        for job in result.jobs:
            if job.model is None or job.state not in (JobState.DONE, JobState.ERROR):
                continue
            conf = self.models.get(job.model)
            found = [f for f in result.findings if f.model_name == job.model]
            version = found[0].model_version if found else (conf.version if conf else "?")
            mode = conf.mode if conf else (found[0].mode if found else "second_reader")
            demo = any(f.demo for f in found) or (
                conf is not None and conf.format == "builtin" and conf.builtin_name == "demo-cxr")
            runs.append(ModelRun(job.model, version, mode, demo, str(job.state)))
        return runs

    async def submit(self, result: CaseResult) -> None:
        if result.no_model:
            return
        runs = [r for r in self.model_runs(result) if r.mode != "shadow" and r.state == "done"]
        if not runs:
            event(log, "RES-202", "nothing to send: shadow mode or no model finished",
                  case=result.case.case_id)
            return
        ctx = await self.store.report_context(result.case.case_id)
        if ctx is None:
            return
        sendable = {(r.name, r.version) for r in runs}
        report = AIReport(
            case_id=ctx.case_id, revision=ctx.revision, study_uid=ctx.study_uid,
            patient=ctx.patient, order=ctx.order,
            findings=[f for f in result.findings if f.mode != "shadow"
                      and (f.model_name, f.model_version) in sendable],
            models=runs, instances=ctx.instances, accession=ctx.accession,
            modality=ctx.modality, body_part=ctx.body_part,
            study_completed_at=ctx.study_completed_at, reported_at=time.time())
        seen = await self.store.query_messages(MessageQuery(
            channel=self.channel, control_id=report.report_id, limit=1))
        if seen:  # told again after a crash: the report is already stored
            return
        key = ctx.patient.patient_id if ctx.patient else ctx.study_uid
        await self.store.insert_message(NewMessage(
            self.channel, time.time(), report.to_json(), control_id=report.report_id,
            message_type=REPORT_MESSAGE_TYPE, key=key))
        self.stored += 1
        event(log, "RES-201", "report stored", case=report.case_id, revision=report.revision,
              findings=len(report.findings), models=len(runs))
        self.on_stored()


# -- escalation ---------------------------------------------------------------------------------

def _matches(rule: EscalationRule, f: Finding) -> bool:
    if rule.model is not None and rule.model != f.model_name:
        return False
    if rule.code is not None and rule.code != f.code:
        return False
    if rule.criticality is not None and rule.criticality != f.criticality:
        return False
    return (f.probability if f.probability is not None else 1.0) >= rule.min_probability


def escalate(report: AIReport, rules: Sequence[EscalationRule]
             ) -> tuple[str, str | None, list[dict[str, Any]]]:
    """The priority the case should have, the reason (None: the order's own priority) and the
    AI flags (every sendable finding) for the worklist."""
    base = order_priority(report.order.priority if report.order else None)
    best, reason = base, None
    for f in report.findings:
        for rule in rules or DEFAULT_ESCALATION:
            if _matches(rule, f) and priority_rank(rule.priority) < priority_rank(best):
                prob = f" {f.probability:.2f}" if f.probability is not None else ""
                best = rule.priority
                reason = f"AI {f.model_name} {f.model_version}: {f.display}{prob}"
    flags = [{"code": f.code, "system": f.coding_system, "display": f.display,
              "probability": f.probability, "criticality": f.criticality,
              "model": f.model_name, "version": f.model_version, "demo": f.demo}
             for f in report.findings]
    return best, reason, flags


# -- the processor: one report → every destination's payload ----------------------------------

class ResultsProcessor:
    cpu_bound = True  # hl7apy validation, FHIR validation, SR encoding
    needs_raw = True

    def __init__(self, channel: Any, config: Any, sinks: dict[str, str]) -> None:
        self.forward_to = list(channel.forward_to)
        self.source: AIResultsSourceConfig = channel.source
        self.rules = list(config.escalation)
        self.sinks = sinks  # destination channel → what it sends (hl7, fhir, dicom, json)
        self.app = self.source.sending_application or config.engine.app_name
        self.facility = self.source.sending_facility or config.engine.facility

    def process(self, msg: Message) -> Outcome:
        from radbridge_fhir.bundle import build_bundle

        try:
            report = AIReport.from_json(msg.raw)
        except (ValueError, TypeError, KeyError) as exc:
            return Outcome(msg.id, Status.ERROR, error=f"not an AI report: {exc}")
        priority, reason, flags = escalate(report, self.rules)
        raised = reason is not None
        layers: dict[str, bytes] = {}
        deliveries: list[tuple[str, bytes | None]] = []
        try:
            bundle = build_bundle(report)
            if raised:
                bundle.setdefault("entry", []).append(
                    priority_task(bundle, report, priority, reason or ""))
            layers["fhir"] = json.dumps(bundle, sort_keys=True).encode()
            for dest in self.forward_to:
                kind = self.sinks.get(dest, "hl7")
                if kind == "hl7" and dest in self.source.order_updates_to:
                    if raised:
                        update = self._order_update(report, priority, reason or "")
                        layers["order_update"] = update
                        deliveries.append((dest, update))
                elif kind == "hl7":
                    from mappings.hl7v2.oru import build_oru

                    oru = layers.get("oru") or build_oru(
                        report, version=self.source.oru_version, sending_application=self.app,
                        sending_facility=self.facility,
                        receiving_application=self.source.receiving_application,
                        receiving_facility=self.source.receiving_facility)
                    layers["oru"] = oru
                    deliveries.append((dest, oru))
                elif kind == "fhir":
                    deliveries.append((dest, layers["fhir"]))
                elif kind == "dicom":
                    from mappings.dicom_sr import build_sr, sr_part10

                    for run in report.models:
                        sr = sr_part10(build_sr(report, run))
                        layers[f"sr:{run.name}"] = sr
                        deliveries.append((dest, sr))
                elif kind == "json" and raised and (
                        priority_rank(priority) <= priority_rank(self.source.alert_priority)):
                    alert = alert_payload(report, priority, reason or "")
                    layers["alert"] = alert
                    deliveries.append((dest, alert))
        except Exception as exc:  # an invalid output never leaves: the message says why
            return Outcome(msg.id, Status.ERROR, error=f"cannot build results: "
                                                       f"{type(exc).__name__}: {exc}")
        update = WorklistUpdate(report.case_id, report.study_uid, priority, reason, flags,
                                [e["resource"] for e in bundle.get("entry", [])])
        return Outcome(msg.id, Status.TRANSFORMED, layers=layers, deliveries=deliveries,
                       domain=update)

    def _order_update(self, report: AIReport, priority: str, reason: str) -> bytes:
        from mappings.hl7v2.order_update import build_order_update

        return build_order_update(report, HL7_PRIORITY[priority], reason,
                                  message=self.source.order_update_message,
                                  priority_field=self.source.priority_field,
                                  sending_application=self.app,
                                  sending_facility=self.facility)


FHIR_PRIORITY = {"STAT": "stat", "URGENT": "urgent", "ROUTINE": "routine"}


def priority_task(bundle: dict[str, Any], report: AIReport, priority: str, reason: str
                  ) -> dict[str, Any]:
    """A transaction entry for the FHIR side of a raised priority: a Task asking for the
    study to be read first (focus: the ImagingStudy, for: the patient), conditional on its
    identifier like every entry we send. Validated with the R4B Task model."""
    from fhir.resources.R4B.task import Task

    refs = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle.get("entry", [])}
    identifier = f"{report.report_id}-priority"
    system = "urn:radbridge:worklist"
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                         "v3-ObservationValue", "code": "AIAST",
                               "display": "Artificial Intelligence asserted"}]},
        "identifier": [{"system": system, "value": identifier}],
        "status": "requested", "intent": "order", "priority": FHIR_PRIORITY[priority],
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}],
                 "text": f"Read first: worklist priority raised to {priority}"},
        "reasonCode": {"text": reason},
        "authoredOn": report.reported_datetime().isoformat(timespec="seconds"),
    }
    if "ImagingStudy" in refs:
        task["focus"] = {"reference": refs["ImagingStudy"]}
    if "Patient" in refs:
        task["for"] = {"reference": refs["Patient"]}
    Task.model_validate(task)
    return {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, system + '/' + identifier)}",
            "resource": task,
            "request": {"method": "POST", "url": "Task",
                        "ifNoneExist": f"identifier={system}|{identifier}"}}


def alert_payload(report: AIReport, priority: str, reason: str) -> bytes:
    """A webhook alert: which case, why, what AI found. Identifiers a reading room needs to
    find the study (accession, study UID); no names, no birth dates."""
    return json.dumps({
        "type": "radbridge.ai.priority_raised", "case_id": report.case_id,
        "report_id": report.report_id, "priority": priority, "reason": reason,
        "accession": report.accession, "study_uid": report.study_uid,
        "demo": report.demo, "second_reader": True,
        "findings": [{"code": f.code, "system": f.coding_system, "display": f.display,
                      "probability": f.probability, "criticality": f.criticality,
                      "model": f.model_name, "version": f.model_version}
                     for f in report.findings],
    }, sort_keys=True).encode()


# -- final reports from the RIS: agreement -----------------------------------------------------

class FinalReportsProcessor:
    """``process = "final_reports"``: the radiologist's ORU, compared with the AI findings."""

    cpu_bound = True
    needs_raw = True

    def __init__(self, channel: Any, config: Any) -> None:
        self.forward_to = list(channel.forward_to)
        self.model_codes = {f"{m.name}|{m.version}": [label.code for label in m.output.labels]
                            for m in config.model}

    def process(self, msg: Message) -> Outcome:
        from mappings.hl7v2.final_report import read_final_report

        try:
            final = read_final_report(msg.raw)
        except Exception as exc:
            return Outcome(msg.id, Status.ERROR, error=f"cannot read final report: {exc}")
        if (final.status or "").upper() not in ("F", "C"):
            return Outcome(msg.id, Status.FILTERED,
                           error=f"result status {final.status!r} is not final (F or C)")
        ev = FinalReportEvent(final.accession, final.placer, final.filler,
                              [c[0] for c in final.codes], final.status, self.model_codes)
        return Outcome(msg.id, Status.TRANSFORMED,
                       layers={"mapped": json.dumps({"codes": ev.codes}).encode()},
                       deliveries=[(dest, None) for dest in self.forward_to], domain=ev)
