"""The results side of the store: the reading worklist and radiologist feedback.

The worklist holds every case the engine has (an order joined with its
complete study, or a study that proceeded without an order), ranked by
priority, then age. A case starts at its order's priority (ORC-7.6 / TQ1-9:
S → STAT, A/T/C → URGENT, otherwise ROUTINE); an escalation rule that an AI
finding meets may raise it, never lower it, and the reason and the AI flags
are kept beside it. Shadow-mode findings never change a priority.

Feedback is what radiologists say about each AI finding — accept, reject,
modify (from the API) — and what their final reports say (an inbound final
ORU compared with the AI's codes: a finding confirmed, refuted, or a code the
model should have found and did not). Agreement per model and version is the
drift signal.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.results.model import ReportOrder, ReportPatient, SourceInstance

PRIORITIES = ("STAT", "URGENT", "ROUTINE")  # highest first
VERDICTS = ("accept", "reject", "modify", "missed")


def priority_rank(priority: str | None) -> int:
    """0 for STAT ... 2 for ROUTINE (unknown counts as ROUTINE)."""
    return PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES) - 1


def order_priority(code: str | None) -> str:
    """An HL7 order priority code (ORC-7.6 / TQ1-9 / OBR-27.6) as a worklist priority."""
    code = (code or "").strip().upper()
    if code == "S":
        return "STAT"
    if code in ("A", "T", "C"):
        return "URGENT"
    return "ROUTINE"


@dataclass(slots=True)
class ReportContext:
    """What a report needs beyond the inference case: who, what was ordered, which images."""

    case_id: int
    study_uid: str
    revision: int
    patient: ReportPatient | None
    order: ReportOrder | None
    instances: list[SourceInstance]
    accession: str | None = None
    modality: str | None = None
    body_part: str | None = None
    study_completed_at: float | None = None


@dataclass(slots=True)
class WorklistUpdate:
    """Applied in the results pipeline's transaction (``Outcome.domain``)."""

    case_id: int
    study_uid: str
    priority: str  # the priority the case should have now (never below the current one)
    reason: str | None
    ai_flags: list[dict[str, Any]] = field(default_factory=list)  # code, display, probability…
    fhir_resources: list[dict[str, Any]] = field(default_factory=list)  # for the /fhir read API


@dataclass(slots=True)
class WorklistRow:
    case_id: int
    study_uid: str
    accession: str | None
    patient_id: str | None
    modality: str | None
    body_part: str | None
    procedure: str | None
    priority: str
    order_priority: str
    reason: str | None
    ai_flags: list[dict[str, Any]]
    created_at: float  # when the case became ready (its age on the list)
    raised_at: float | None  # when AI raised its priority
    state: str  # unread | read


@dataclass(slots=True)
class FeedbackEntry:
    case_id: int
    model: str
    version: str
    code: str  # the AI finding's code (or, for "missed", the code the report had)
    verdict: str  # accept | reject | modify | missed
    source: str = "radiologist"  # radiologist | final_report
    corrected_code: str | None = None  # modify: what the radiologist says it is
    reader: str | None = None  # who (an admin user name); never a patient identifier
    comment: str | None = None
    created_at: float = 0.0


@dataclass(slots=True)
class FinalReportEvent:
    """An inbound final report, compared with the AI findings in the store's transaction."""

    accession: str | None
    placer: str | None
    filler: str | None
    codes: list[str]  # the codes of the final report (OBX-3 / OBX-5 CWE values)
    status: str | None  # OBR-25: F (final), C (corrected) ...
    # The codes each model can report (its labels): a report code among them that the model did
    # not find counts as "missed" for that model. {(model, version): [codes]}
    model_codes: dict[str, list[str]] = field(default_factory=dict)  # "model|version" → codes


@dataclass(slots=True)
class AgreementRow:
    model: str
    version: str
    accepted: int
    rejected: int
    modified: int
    missed: int

    @property
    def agreement(self) -> float | None:
        """Confirmed findings over everything judged (findings and misses); None: nothing yet."""
        judged = self.accepted + self.rejected + self.modified + self.missed
        return self.accepted / judged if judged else None


class ResultsStore(abc.ABC):
    @abc.abstractmethod
    async def report_context(self, case_id: int) -> ReportContext | None:
        """The patient, order and stored instances of a case (None: no such case).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_worklist(self, limit: int = 100, include_read: bool = False
                            ) -> list[WorklistRow]:
        """Open cases by priority (STAT first), then age (oldest first).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def mark_read(self, case_id: int, read: bool = True) -> bool:
        """Take a case off (or put it back on) the reading list; False: no such case.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def record_feedback(self, entries: Sequence[FeedbackEntry]) -> None:
        """Store feedback; a later verdict on the same (case, model, version, code, source)
        replaces the earlier one. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_feedback(self, case_id: int | None = None, limit: int = 100
                            ) -> list[FeedbackEntry]:
        """Feedback rows, newest first (of one case, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def agreement(self) -> list[AgreementRow]:
        """Per model and version: confirmed, refuted, modified and missed findings.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
