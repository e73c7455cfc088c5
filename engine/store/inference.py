"""The inference side of the store: jobs (the durable queue), findings, audit, pseudonyms.

A new case becomes one job per routed model (or one ``no_model`` job) before
anything runs; the dispatcher claims queued jobs, and at start-up running jobs
are put back to queued (their attempt stays counted, so a job that crashes the
engine every time ends in ``error``). When every job of a case is final the
case gets an ``inference_results`` row; the result listeners are told, and the
row is marked notified only after they returned, so a crash in between tells
them again at the next start (at least once).

::

    queued -> running -> done
       ^         |
       +---------+ (retry: timeout, forward failure) -> error (attempts used up, or final)
    no_model    (no route matched: final at once)
"""

from __future__ import annotations

import abc
import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.model import Finding


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    NO_MODEL = "no_model"

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.ERROR, JobState.NO_MODEL)


LANE_STAT = 0  # STAT orders and emergency-department patients
LANE_ROUTINE = 1


@dataclass(slots=True)
class CaseContext:
    """What routing and the models may know about a case (read from the store)."""

    case_id: int
    study_uid: str
    revision: int
    state: str
    accession: str | None = None
    patient_id: str | None = None
    issuer: str | None = None
    modality: str | None = None
    body_part: str | None = None
    procedure_code: str | None = None
    procedure_text: str | None = None
    priority: str | None = None
    patient_class: str | None = None
    location: str | None = None


@dataclass(slots=True)
class JobRow:
    id: int
    case_id: int
    model: str | None  # None: no model applies
    state: JobState
    lane: int
    attempts: int
    created_at: float
    updated_at: float
    not_before: float = 0.0
    error: str | None = None


@dataclass(slots=True)
class AuditEntry:
    """One inference attempt: what ran, where, how long each stage took, what came out."""

    job_id: int
    case_id: int
    study_uid: str
    model: str
    version: str
    checksum: str
    device: str
    attempt: int
    status: str  # ok | error | timeout
    batch_size: int = 0
    queue_ms: float | None = None
    preprocess_ms: float | None = None
    forward_ms: float | None = None
    total_ms: float | None = None
    outputs: str = "{}"  # JSON: raw probabilities / rule results; never patient data
    error: str | None = None
    id: int = 0
    created_at: float = 0.0


@dataclass(slots=True)
class StoredFinding:
    id: int
    case_id: int
    job_id: int
    study_uid: str
    finding: Finding
    created_at: float


@dataclass(slots=True)
class ModelLoad:
    """A model load at start-up, with the checksum of what was loaded (or why it was not)."""

    name: str
    version: str
    format: str
    checksum: str
    device: str
    status: str  # loaded | failed | deferred (a remote model whose server did not answer yet)
    error: str | None = None
    at: float = 0.0


@dataclass(slots=True)
class CaseResult:
    """What ``Engine.result_listeners`` receive once every job of a case is final."""

    case: CaseContext
    findings: list[Finding]
    jobs: list[JobRow] = field(default_factory=list)

    @property
    def no_model(self) -> bool:
        return all(j.state == JobState.NO_MODEL for j in self.jobs)


def new_pseudonym(kind: str) -> str:
    """A fresh random pseudonym: a ``2.25`` UID for UIDs, a short token for identifiers."""
    if kind.endswith("uid"):
        return f"2.25.{uuid.uuid4().int}"
    if kind == "salt":
        return secrets.token_hex(32)
    return "RB" + secrets.token_hex(7).upper()  # 16 characters: fits SH and LO


def derived_uid(salt: str, real: str) -> str:
    """A UID derived from *real* with the study's secret salt (series, SOP, frame of reference):
    stable for one study, unlinkable without the salt."""
    digest = hmac.new(salt.encode(), real.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


class InferenceStore(abc.ABC):
    @abc.abstractmethod
    async def inference_case(self, case_id: int) -> CaseContext | None:
        """The case with its order's procedure, priority, patient class and location.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def case_instance_paths(self, study_uid: str) -> list[str]:
        """Instance files of a study, our own outputs left out.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def enqueue_jobs(self, case_id: int, models: Sequence[str], lane: int,
                           reason: str | None = None) -> list[JobRow]:
        """Persist a case's jobs (one ``no_model`` job when *models* is empty). Idempotent:
        a case that already has jobs gets them back unchanged.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def cases_without_jobs(self, limit: int = 1000) -> list[int]:
        """Ready or study-only cases that were never routed (a crash between case and jobs).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def reset_running_jobs(self) -> int:
        """Start-up recovery: running jobs go back to queued.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        """Queued jobs due by *now*, STAT lane first, oldest first; marks them running and
        counts the attempt. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def retry_job(self, job_id: int, error: str, not_before: float,
                        audit: AuditEntry | None, refund: bool = False) -> None:
        """A transient failure: back to queued, not before *not_before*. ``refund``: the
        attempt did not count (the model's server was unavailable), so waiting for it never
        uses up the job's retries. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def finish_job(self, job_id: int, state: JobState, findings: Sequence[Finding],
                         audit: AuditEntry | None, error: str | None = None) -> bool:
        """Record the final state, findings and audit in one transaction; true when this made
        every job of the case final. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def case_result(self, case_id: int) -> tuple[list[JobRow], list[StoredFinding]]:
        """A case's jobs and findings.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def unnotified_cases(self, limit: int = 1000) -> list[int]:
        """Cases whose inference finished and were not yet reported.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def mark_notified(self, case_id: int) -> None:
        """Record that a case's results were reported.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def pseudonymize_study(self, case_id: int, study_uid: str, patient_id: str | None,
                                 accession: str | None) -> dict[str, str]:
        """Get or create the study's pseudonyms: keys ``study_uid``, ``patient_id``,
        ``accession`` (when given) and ``salt``.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def save_pseudonyms(self, case_id: int, pairs: Sequence[tuple[str, str, str]]
                              ) -> None:
        """Keep (kind, real, pseudo) pairs; existing pairs are left as they are.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def real_for(self, kind: str, pseudo: str) -> str | None:
        """Reverse a pseudonym (re-link a result to the real study).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def record_model_load(self, load: ModelLoad) -> None:
        """Record a model load (or its failure) for the audit.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_audit(self, case_id: int | None = None, model: str | None = None,
                         limit: int = 100) -> list[AuditEntry]:
        """Audit rows, newest first (of one case or model, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_findings(self, case_id: int | None = None, limit: int = 100
                            ) -> list[StoredFinding]:
        """Findings in order (of one case, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_jobs(self, case_id: int | None = None, state: str | None = None,
                        limit: int = 100) -> list[JobRow]:
        """Jobs, newest first (of one case or state, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_model_loads(self, limit: int = 50) -> list[ModelLoad]:
        """Model loads, newest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
