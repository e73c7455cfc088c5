"""What each consumer of the store may call: small protocols, not the whole ``Store``.

``Store`` has some seventy public methods; the workers of the flow each need a
handful. Each takes the protocol below that lists exactly the methods it calls, so what a
consumer depends on is written down where it is typed, a test double needs only those
methods, and a new call is a visible change here. Both stores satisfy every protocol
structurally (nothing subclasses them); ``tests/unit/test_store_protocols.py`` checks that
``SQLiteStore`` and ``PostgresStore`` have each member with a compatible signature, and that
each consumer module calls nothing on its store outside its protocol.

* ``MessageQueue``: ``engine.flow.pipeline.Pipeline`` (claim RECEIVED, apply outcomes);
* ``DeliveryQueue``: ``engine.flow.delivery.DeliveryWorker`` (the queue's head, its results);
* ``DeliveryActions``: ``engine.flow.delivery.operate`` (an operator's skip, cancel, retry);
* ``StudyAssembly``: ``engine.flow.assembly.StudyAssembler`` (due studies, complete one);
* ``JobWork``: ``inference.runner.JobRunner`` (one claimed job to its end);
* ``JobQueue``: ``inference.service.InferenceService`` (route, claim, report; it includes
  ``JobWork`` because the service hands its store to its runner);
* ``MessageIntake``: ``engine.flow.ingest.Ingest`` (store, then answer);
* ``SignalFeed``: ``engine.flow.signals.SignalWatcher`` (other processes' changes);
* ``RetentionWork``: ``engine.flow.retention.Retention`` (old instances and messages);
* ``ReportIntake``: ``engine.results.channel.ResultsIngest`` (a finished case's report);
* ``AdminReads``: ``engine.admin.views.StoreViews`` (the dashboard's counts and rows).

The operator's side (the admin's route modules, which reach the store through one accessor
each, and the CLI's commands) takes the desks below; a desk may serve several of them, and
each of its methods is called by one at least:

* ``MessageDesk``: ``engine.admin.routes_messages``, ``routes_channels``, ``routes_system``;
  ``radbridge messages`` (``engine.cli.messages``);
* ``ClinicalDesk``: ``engine.admin.routes_clinical``; ``engine.cli.clinical``;
* ``WorklistDesk``: ``engine.admin.routes_worklist``;
* ``InferenceRecords``: ``engine.admin.routes_models``; ``engine.cli.inference``;
* ``FhirSearch``: ``engine.admin.routes_fhir``;
* ``DeliveryActions``: ``engine.admin.routes_deliveries``; ``DeliveryDesk`` (with the
  listing): ``engine.cli.deliveries``.

``engine.cli.demo`` (it drives the whole flow end to end and reads most of the store) takes
the whole ``Store``, and so does ``radbridge messages vacuum`` (SQLite's own maintenance).

What a method raises is in its docstring (``engine.errors``): ``StoreUnavailable`` when the
database cannot be reached or take writes now (retry later), ``StoreError`` for any other
database failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.model import DeliveryStatus, Finding, Message
from engine.store.base import InsertCallback, NewMessage, Outcome, PruneResult
from engine.store.clinical import CaseRow, OrderRow, StudyRow
from engine.store.deliveries import DeliveryInfo, Finished
from engine.store.inference import (
    AuditEntry,
    CaseContext,
    JobRow,
    JobState,
    ModelLoad,
    StoredFinding,
)
from engine.store.records import Delivery, MessageQuery
from engine.store.results import AgreementRow, FeedbackEntry, ReportContext, WorklistRow
from engine.store.signals import Signal


class MessageQueue(Protocol):
    """The durable message queue of one channel's pipeline."""

    async def fetch_received(self, channel: str, limit: int, with_raw: bool = True,
                             besides: tuple[int, int] = (0, 0)) -> list[Message]:
        """Oldest RECEIVED messages of *channel*, in arrival order (``raw`` empty unless
        asked), but those with ids from ``besides[0]`` to ``besides[1]`` (a batch still being
        recorded). Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def apply_outcomes(self, outcomes: Sequence[Outcome]) -> list[CaseRow]:
        """Record statuses, layers, deliveries and domain events of a processed batch in one
        transaction; return the cases that the domain events created.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class DeliveryQueue(Protocol):
    """One destination's delivery queue, as its worker sends it."""

    async def next_deliveries(self, destination: str, limit: int) -> list[Delivery]:
        """Oldest QUEUED deliveries for *destination*, in order.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def finish_deliveries(self, results: Sequence[Finished]) -> None:
        """Record each (delivery, status, response, error), all in one transaction, and roll
        each message's status up once all its deliveries are final. SENT always stands;
        ERROR does not replace an operator's decision.
        Raises ``StoreUnavailable`` (try again later) or ``StoreError``."""
        ...

    async def record_attempt(self, delivery: Delivery, error: str) -> None:
        """Record a failed (transient) attempt on a delivery still QUEUED. Raises
        ``StoreUnavailable`` (try again later) or ``StoreError``."""
        ...

    async def delivery_status(self, delivery_id: int) -> DeliveryStatus | None:
        """The status of one delivery now (None: no such delivery).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class DeliveryActions(Protocol):
    """An operator's actions on one delivery (the admin API and ``radbridge deliveries``)."""

    async def get_delivery(self, delivery_id: int) -> DeliveryInfo | None:
        """One delivery without its payload (None: no such delivery).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def end_delivery(self, delivery_id: int, note: str) -> bool:
        """A QUEUED delivery ends as ERROR with *note* (see ``operator_note``); False when it
        is not QUEUED (or does not exist). Raises ``StoreUnavailable`` or ``StoreError``."""
        ...

    async def requeue_delivery(self, delivery_id: int, note: str) -> bool:
        """An ERROR delivery goes back to QUEUED, sent next; False when it is not ERROR.
        Raises ``StoreUnavailable`` or ``StoreError``."""
        ...


class StudyAssembly(Protocol):
    """The studies still receiving, as the assembler completes them."""

    async def studies_due(self, now: float) -> list[StudyRow]:
        """Receiving studies whose quiet period has passed or that reached their expected count.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def complete_study(self, uid: str, *, announce: bool = False) -> list[CaseRow]:
        """Mark a study complete (explicit trigger or timer) and correlate; returns new cases.

        *announce*: signal running engines of the new cases in the same transaction (a
        change made outside the engine: see ``engine.store.signals``).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class JobWork(Protocol):
    """What running one claimed inference job reads and records."""

    async def inference_case(self, case_id: int) -> CaseContext | None:
        """The case with its order's procedure, priority, patient class and location.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def case_instance_paths(self, study_uid: str) -> list[str]:
        """Instance files of a study, our own outputs left out.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def pseudonymize_study(
        self, case_id: int, study_uid: str, patient_id: str | None, accession: str | None
    ) -> dict[str, str]:
        """Get or create the study's pseudonyms: keys ``study_uid``, ``patient_id``,
        ``accession`` (when given) and ``salt``.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def save_pseudonyms(self, case_id: int, pairs: Sequence[tuple[str, str, str]]) -> None:
        """Keep (kind, real, pseudo) pairs; existing pairs are left as they are.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def real_for(self, kind: str, pseudo: str) -> str | None:
        """Reverse a pseudonym (re-link a result to the real study).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def retry_job(
        self,
        job_id: int,
        error: str,
        not_before: float,
        audit: AuditEntry | None,
        refund: bool = False,
    ) -> None:
        """A transient failure: back to queued, not before *not_before*. ``refund``: the
        attempt did not count (the model's server was unavailable), so waiting for it never
        uses up the job's retries. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def finish_job(
        self,
        job_id: int,
        state: JobState,
        findings: Sequence[Finding],
        audit: AuditEntry | None,
        error: str | None = None,
    ) -> bool:
        """Record the final state, findings and audit in one transaction; true when this made
        every job of the case final. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class JobQueue(JobWork, Protocol):
    """The durable inference job queue, as the service routes, claims and reports it. It
    includes ``JobWork``: the service hands its store to its ``JobRunner``."""

    async def record_model_load(self, load: ModelLoad) -> None:
        """Record a model load (or its failure) for the audit.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def reset_running_jobs(self) -> int:
        """Start-up recovery: running jobs go back to queued.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def cases_without_jobs(self, limit: int = 1000) -> list[int]:
        """Ready or study-only cases that were never routed (a crash between case and jobs).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def enqueue_jobs(
        self, case_id: int, models: Sequence[str], lane: int, reason: str | None = None
    ) -> list[JobRow]:
        """Persist a case's jobs (one ``no_model`` job when *models* is empty). Idempotent:
        a case that already has jobs gets them back unchanged.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def claim_jobs(self, limit: int, now: float) -> list[JobRow]:
        """Queued jobs due by *now*, STAT lane first, oldest first; marks them running and
        counts the attempt. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def case_result(self, case_id: int) -> tuple[list[JobRow], list[StoredFinding]]:
        """A case's jobs and findings.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def unnotified_cases(self, limit: int = 1000) -> list[int]:
        """Cases whose inference finished and were not yet reported.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def mark_notified(self, case_id: int) -> None:
        """Record that a case's results were reported.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class MessageIntake(Protocol):
    """Where a source's messages are stored before they are answered."""

    def submit_insert(self, msg: NewMessage, callback: InsertCallback) -> None:
        """Queue *msg* for the next group commit; *callback(id, error)* runs on the loop after it.
        Raises nothing: a failure reaches *callback* as ``StoreUnavailable`` or ``StoreError``."""
        ...


class SignalFeed(Protocol):
    """The changes other processes announce in the store (``engine.store.signals``)."""

    async def signal_cursor(self) -> int:
        """The newest signal's id (0 when none): an engine acts on what comes after it.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def signals_after(self, cursor: int, limit: int = 500) -> list[Signal]:
        """Signals committed after *cursor*, oldest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def listen_signals(self, wake: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call *wake* as soon as another process signals, where the database can say so;
        returns the coroutine function that stops listening. Raises nothing."""
        ...


class RetentionWork(Protocol):
    """What retention forgets: old instances (their files are deleted by the caller) and old
    final messages."""

    async def prune_instances(self, before: float) -> list[str]:
        """Forget instances received before *before*; returns their file paths to delete.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def prune_messages(self, before: float, archive: Path | None = None) -> PruneResult:
        """Forget final messages received before *before* (archived first under *archive*).
        Raises ``ArchiveError`` when the archive cannot be written (nothing is deleted),
        ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class ReportIntake(Protocol):
    """Where the ``ai_results`` source reads a finished case and stores its report."""

    async def report_context(self, case_id: int) -> ReportContext | None:
        """The patient, order and stored instances of a case (None: no such case).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def query_messages(self, query: MessageQuery) -> list[Message]:
        """Messages matching *query*, newest first. Raises ``StoreError`` when the database
        cannot be read."""
        ...

    async def insert_message(self, msg: NewMessage) -> int:
        """Insert one message and wait for its commit; its id.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class AdminReads(Protocol):
    """The admin dashboard's counts and single rows (``engine.admin.views``)."""

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries by (destination, status).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def oldest_queued(self, destinations: Sequence[str]) -> dict[str, float]:
        """When the message behind each destination's oldest waiting delivery arrived.
        Raises ``StoreError`` when the database cannot be read."""
        ...

    async def study_counts(self) -> dict[str, int]:
        """Studies by state. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def get_case(self, case_id: int) -> CaseRow | None:
        """One case (None: no such case).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def get_order(self, order_id: int) -> tuple[OrderRow, int | None] | None:
        """An order and the id of the message that last changed it.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class MessageDesk(Protocol):
    """An operator's view of stored messages: find, show, reprocess (the admin's message
    pages, the try page, the readiness probe, ``radbridge messages``)."""

    async def query_messages(self, query: MessageQuery) -> list[Message]:
        """Messages matching *query*, newest first. Raises ``StoreError`` when the database
        cannot be read."""
        ...

    async def get_message(self, message_id: int) -> tuple[Message, list[Delivery]] | None:
        """A message with its layers and deliveries (None: no such message). Raises
        ``StoreError`` when the database cannot be read."""
        ...

    async def reprocess(self, message_ids: Sequence[int], *, announce: bool = False) -> int:
        """Put messages back to RECEIVED (their deliveries are re-created by the pipeline);
        how many were found.

        *announce*: also signal running engines in the same transaction (a change made
        outside the engine, e.g. the CLI: see ``engine.store.signals``). Raises
        ``StoreUnavailable`` (try again later) or ``StoreError``."""
        ...


class ClinicalDesk(Protocol):
    """Studies, orders, cases and the worklist as an operator reads and moves them (the
    admin's clinical pages, ``radbridge studies/orders/cases/...``)."""

    async def list_studies(self, state: str | None = None, limit: int = 100) -> list[StudyRow]:
        """Studies, latest activity first (only those in *state*, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def get_study(self, uid: str) -> StudyRow | None:
        """One study (None: no such study).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_orders(self, limit: int = 100) -> list[OrderRow]:
        """Orders, newest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_cases(self, state: str | None = None, limit: int = 100) -> list[CaseRow]:
        """Cases, newest first (only those in *state*, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def unmatched(self, older_than: float) -> tuple[list[OrderRow], list[StudyRow]]:
        """Orders without a study and complete studies without an order, older than a time.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def proceed_study_only(self, uid: str, *, announce: bool = False) -> CaseRow | None:
        """Let an unmatched complete study go on without its order (*announce*: as for
        ``complete_study``). Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def complete_study(self, uid: str, *, announce: bool = False) -> list[CaseRow]:
        """Mark a study complete (explicit trigger or timer) and correlate; returns new cases.

        *announce*: signal running engines of the new cases in the same transaction (a
        change made outside the engine: see ``engine.store.signals``).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_worklist(
        self, limit: int = 100, include_read: bool = False
    ) -> list[WorklistRow]:
        """Open cases by priority (STAT first), then age (oldest first).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def agreement(self) -> list[AgreementRow]:
        """Per model and version: confirmed, refuted, modified and missed findings.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class WorklistDesk(Protocol):
    """The reading worklist: a case's findings, the reader's verdicts and report (the
    admin's worklist pages)."""

    async def list_worklist(
        self, limit: int = 100, include_read: bool = False
    ) -> list[WorklistRow]:
        """Open cases by priority (STAT first), then age (oldest first).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def mark_read(self, case_id: int, read: bool = True) -> bool:
        """Take a case off (or put it back on) the reading list; False: no such case.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def get_case(self, case_id: int) -> CaseRow | None:
        """One case (None: no such case).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_findings(
        self, case_id: int | None = None, limit: int = 100
    ) -> list[StoredFinding]:
        """Findings in order (of one case, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def record_feedback(self, entries: Sequence[FeedbackEntry]) -> None:
        """Store feedback; a later verdict on the same (case, model, version, code, source)
        replaces the earlier one. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_feedback(
        self, case_id: int | None = None, limit: int = 100
    ) -> list[FeedbackEntry]:
        """Feedback rows, newest first (of one case, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def agreement(self) -> list[AgreementRow]:
        """Per model and version: confirmed, refuted, modified and missed findings.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def query_messages(self, query: MessageQuery) -> list[Message]:
        """Messages matching *query*, newest first. Raises ``StoreError`` when the database
        cannot be read."""
        ...

    async def get_message(self, message_id: int) -> tuple[Message, list[Delivery]] | None:
        """A message with its layers and deliveries (None: no such message). Raises
        ``StoreError`` when the database cannot be read."""
        ...


class InferenceRecords(Protocol):
    """The inference audit trail: model loads, jobs, runs, findings (the admin's models page,
    ``radbridge inference``)."""

    async def list_model_loads(self, limit: int = 50) -> list[ModelLoad]:
        """Model loads, newest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_jobs(
        self, case_id: int | None = None, state: str | None = None, limit: int = 100
    ) -> list[JobRow]:
        """Jobs, newest first (of one case or state, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_audit(
        self, case_id: int | None = None, model: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Audit rows, newest first (of one case or model, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def list_findings(
        self, case_id: int | None = None, limit: int = 100
    ) -> list[StoredFinding]:
        """Findings in order (of one case, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...

    async def agreement(self) -> list[AgreementRow]:
        """Per model and version: confirmed, refuted, modified and missed findings.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class FhirSearch(Protocol):
    """The FHIR resources the store keeps, as the admin's FHIR read API searches them."""

    async def search_fhir(
        self,
        resource_type: str,
        *,
        resource_id: str | None = None,
        patient: str | None = None,
        identifier: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Resources of *resource_type*, newest first, matching every criterion given.

        ``patient``: ``Patient/<id>``, a bare id, a patient identifier value, or
        ``system|value`` of a patient identifier. ``identifier``: ``system|value``, ``value``
        or ``system|`` (any value in that system) of the resource's own identifiers.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...


class DeliveryDesk(DeliveryActions, Protocol):
    """A destination's deliveries listed, and an operator's actions on one
    (``radbridge deliveries``)."""

    async def list_deliveries(
        self, destination: str, status: DeliveryStatus | None = None, limit: int = 50
    ) -> list[DeliveryInfo]:
        """QUEUED ones in queue order (the head first); otherwise newest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
        ...
