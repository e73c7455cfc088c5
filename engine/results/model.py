"""An AI report: what the result builders (ORU^R01, FHIR, DICOM SR, order updates) read.

When every inference job of a case is final, ``engine.results.channel`` gathers the
case, its patient, its order, the source instances and the sendable findings
into one ``AIReport`` and stores it as a message on the results channel (JSON,
see ``to_json``). The results channel's pipeline builds each output from it,
so a result is durable before anything is built, replayable from the message
log, and delivered by the same queues, retries and dashboard as any message.

The builders are pure functions of an ``AIReport``: the same report gives the
same bytes (identifiers and UIDs derive from the report, never from a clock or
a random source), so a retry or a replay replaces what it sent before instead
of duplicating it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.model import Finding

REPORT_MESSAGE_TYPE = "AI^RESULT"


def report_id_for(case_id: int, revision: int) -> str:
    """The id of a case revision's AI report (its message's control id on ``ai_results``)."""
    return f"RB{case_id}R{revision}"


@dataclass(slots=True)
class ReportPatient:
    patient_id: str
    issuer: str | None = None
    family: str | None = None
    given: str | None = None
    birth_date: str | None = None  # YYYYMMDD as the RIS sent it
    sex: str | None = None  # HL7 administrative sex: F, M, O, U ...


@dataclass(slots=True)
class ReportOrder:
    placer: str | None = None  # ORC-2
    filler: str | None = None  # ORC-3
    accession: str | None = None
    requested_procedure_id: str | None = None
    procedure_code: str | None = None  # OBR-4.1
    procedure_text: str | None = None  # OBR-4.2
    procedure_system: str | None = None  # OBR-4.3
    priority: str | None = None  # S, A, R ...
    modality: str | None = None


@dataclass(slots=True)
class SourceInstance:
    """One stored instance of the study: SR evidence, FHIR ImagingStudy series."""

    series_uid: str
    sop_uid: str
    sop_class_uid: str
    path: str  # the stored Part 10 file (headers are read from it: no PHI in the report)
    modality: str | None = None


@dataclass(slots=True)
class ModelRun:
    """A model that ran on the case (with or without a finding: a negative is a result)."""

    name: str
    version: str
    mode: str = "second_reader"  # shadow runs never reach an AIReport's outputs
    demo: bool = False
    state: str = "done"  # done | error


@dataclass(slots=True)
class AIReport:
    case_id: int
    revision: int
    study_uid: str
    patient: ReportPatient | None
    order: ReportOrder | None
    findings: list[Finding]  # sendable findings only (mode second_reader)
    models: list[ModelRun]
    instances: list[SourceInstance] = field(default_factory=list)
    accession: str | None = None
    modality: str | None = None
    body_part: str | None = None
    study_completed_at: float | None = None  # epoch seconds
    reported_at: float = 0.0  # epoch seconds: when every job of the case was final
    status: str = "preliminary"  # AI output is a second read: never final

    @property
    def report_id(self) -> str:
        """Stable for one case revision: the HL7 control id stem and FHIR identifier value."""
        return report_id_for(self.case_id, self.revision)

    @property
    def demo(self) -> bool:
        return any(m.demo for m in self.models) or any(f.demo for f in self.findings)

    def uid(self, *purpose: str) -> str:
        """A deterministic ``2.25`` UID from the study and *purpose* (e.g. the model name and
        version for an SR): the same report always gives the same UID, so a re-run replaces."""
        text = "|".join((self.study_uid, *purpose))
        return f"2.25.{int.from_bytes(hashlib.sha256(text.encode()).digest()[:15], 'big')}"

    def reported_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.reported_at, UTC)

    def findings_of(self, model: str, version: str) -> list[Finding]:
        return [f for f in self.findings
                if f.model_name == model and f.model_version == version]

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True,
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> AIReport:
        obj: dict[str, Any] = json.loads(data)
        patient = obj.pop("patient")
        order = obj.pop("order")
        return cls(
            patient=ReportPatient(**patient) if patient else None,
            order=ReportOrder(**order) if order else None,
            findings=[Finding(**f) for f in obj.pop("findings")],
            models=[ModelRun(**m) for m in obj.pop("models")],
            instances=[SourceInstance(**i) for i in obj.pop("instances")],
            **obj)


@dataclass
class ResultBuild:
    """What a result payload builder gets: one report, its escalation (the priority and the
    reason it was raised, None: not raised), the ``ai_results`` source's settings, our MSH-3
    and MSH-4, and what is built so far, shared so that a payload is built once per report:
    ``layers`` (kept with the message) and ``resources`` (the FHIR resources of the case,
    kept with the worklist, each with its ``id``: see ``FhirStore.save_fhir_resources``)."""

    report: AIReport
    priority: str
    reason: str | None
    source: Any  # engine.config.results.AIResultsSourceConfig
    app: str
    facility: str
    layers: dict[str, bytes] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def raised(self) -> bool:
        return self.reason is not None
