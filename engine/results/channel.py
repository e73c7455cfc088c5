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
registry), built by the payload builder registered under that name: ``hl7`` →
ORU^R01 (or, for ``order_updates_to``, the RIS order update when AI raised the
priority; ``mappings.hl7v2.plugin``), ``fhir`` → a transaction Bundle
(``radbridge_fhir.plugin``), ``dicom`` → one TID 1500 SR per model
(``mappings.sr_plugin``), ``json`` → an alert when the case was raised to
``alert_priority`` (here). A build or validation failure ends the message as
ERROR with the reason: visible, fixable, reprocessable; nothing invalid leaves.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from engine import registry
from engine.config.results import DEFAULT_ESCALATION, AIResultsSourceConfig, EscalationRule
from engine.logs import event
from engine.model import Finding, Message, Status
from engine.registry import register
from engine.results.model import REPORT_MESSAGE_TYPE, AIReport, ModelRun, ResultBuild
from engine.store.base import MessageQuery, NewMessage, Outcome
from engine.store.inference import CaseResult, JobState
from engine.store.protocols import ReportIntake
from engine.store.results import (
    WorklistUpdate,
    order_priority,
    priority_rank,
)

log = logging.getLogger("radbridge.results")


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

    def __init__(self, channel: str, store: ReportIntake, models: Sequence[Any],
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
    """One report → every destination's payload, each built by the payload builder
    registered for what that destination sends (``engine.registry.register_payload``)."""

    cpu_bound = True  # hl7apy validation, FHIR validation, SR encoding
    needs_raw = True

    def __init__(self, channel: Any, config: Any, sinks: dict[str, str]) -> None:
        self.forward_to = list(channel.destinations)
        self.source: AIResultsSourceConfig = channel.source
        self.rules = list(config.escalation)
        self.sinks = sinks  # destination channel → what it sends (hl7, fhir, dicom, json)
        self.app = self.source.sending_application or config.engine.app_name
        self.facility = self.source.sending_facility or config.engine.facility

    def payload_for(self, dest: str) -> str:
        """The payload a destination gets: what its type sends, except that the
        ``order_updates_to`` destinations of an HL7 sink get the order update."""
        kind = self.sinks.get(dest, "hl7")
        if kind == "hl7" and dest in self.source.order_updates_to:
            return "order_update"
        return kind

    def process(self, msg: Message) -> Outcome:
        try:
            report = AIReport.from_json(msg.raw)
        except (ValueError, TypeError, KeyError) as exc:
            return Outcome(msg.id, Status.ERROR, error=f"not an AI report: {exc}")
        priority, reason, flags = escalate(report, self.rules)
        job = ResultBuild(report, priority, reason, self.source, self.app, self.facility)
        deliveries: list[tuple[str, bytes | None]] = []
        try:
            for spec in registry.payloads():
                if spec.prepare is not None:
                    spec.prepare(job)
            for dest in self.forward_to:
                builder = registry.payload(self.payload_for(dest))
                for layer, payload in builder.build(job) if builder is not None else ():
                    job.layers[layer] = payload
                    deliveries.append((dest, payload))
        except Exception as exc:  # an invalid output never leaves: the message says why
            return Outcome(msg.id, Status.ERROR, error=f"cannot build results: "
                                                       f"{type(exc).__name__}: {exc}")
        update = WorklistUpdate(report.case_id, report.study_uid, priority, reason, flags,
                                job.resources)
        return Outcome(msg.id, Status.TRANSFORMED, layers=job.layers, deliveries=deliveries,
                       domain=update)


@registry.register_processor("results", "build ORU, FHIR, SR and alerts from AI reports (the "
                                        "default of an ai_results source)", rank=20)
def _results(channel: Any, config: Any) -> ResultsProcessor:
    sinks: dict[str, str] = {c.name: registry.get("destination", c.destination.type).sink
             for c in config.channel if c.destination is not None}
    return ResultsProcessor(channel, config, sinks)


@registry.register_payload("json", "an alert, when the case was raised to alert_priority")
def _alert(job: ResultBuild) -> list[tuple[str, bytes]]:
    if not job.raised or (priority_rank(job.priority)
                          > priority_rank(job.source.alert_priority)):
        return []
    return [("alert", alert_payload(job.report, job.priority, job.reason or ""))]


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
