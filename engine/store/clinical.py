"""The clinical side of the store: patients, orders, studies, instances and cases.

Every change that can join an order with a study (a study completing, an
order arriving or changing, a merge) runs its correlation inside the same
transaction, so "whichever arrives first" can never race into two cases or
none. Rows come back as the dataclasses below.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from engine.model import Order, Patient

# ORC-1: cancel (CA), cancelled as requested (CR), order cancelled (OC), discontinue (DC),
# discontinued as requested (OD): each ends the order and its waiting case.
CANCEL_CONTROLS = frozenset({"CA", "CR", "DC", "OC", "OD"})
CANCEL_STATUSES = frozenset({"CA", "DC"})


@dataclass(slots=True)
class InstanceMeta:
    """What the engine indexes from one DICOM instance."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    patient_id: str | None = None
    issuer: str | None = None
    accession: str | None = None
    modality: str | None = None
    body_part: str | None = None
    own_output: bool = False  # an SR/SEG we produced, coming back: never (re)triggers a study


@dataclass(slots=True)
class InstanceAdded:
    study_uid: str
    revision: int
    state: str
    duplicate: bool  # same SOP Instance UID seen before (replaced)
    reopened: bool  # the study was complete: this instance opened a new revision
    ignored: bool  # our own output: indexed, triggers nothing


@dataclass(slots=True)
class StudyRow:
    uid: str
    accession: str | None
    patient_id: str | None
    issuer: str | None
    modality: str | None
    body_part: str | None
    state: str  # receiving | complete
    revision: int
    series_count: int
    instance_count: int
    expected_count: int | None
    quiet_secs: float
    channel: str
    first_at: float
    last_at: float
    completed_at: float | None


@dataclass(slots=True)
class OrderRow:
    id: int
    order_key: str
    patient_id: str | None
    issuer: str | None
    placer: str | None
    filler: str | None
    accession: str | None
    requested_procedure_id: str | None
    study_uid: str | None
    modality: str | None
    procedure_code: str | None
    procedure_text: str | None
    priority: str | None
    status: str | None
    control: str
    patient_class: str | None
    location: str | None
    cancelled: bool
    created_at: float
    updated_at: float


@dataclass(slots=True)
class CaseRow:
    id: int
    order_id: int | None
    study_uid: str
    revision: int
    state: str  # ready | cancelled | study_only
    created_at: float
    accession: str | None = None
    patient_id: str | None = None
    modality: str | None = None
    body_part: str | None = None
    procedure_code: str | None = None
    priority: str | None = None
    patient_class: str | None = None


class ClinicalStore(abc.ABC):
    @abc.abstractmethod
    async def add_instance(self, channel: str, meta: InstanceMeta, path: str, size: int,
                           quiet_secs: float, expected: int | None = None) -> InstanceAdded:
        """Index a durable instance file; creates or reopens its study.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def add_instances(self, channel: str, rows: Sequence[tuple[InstanceMeta, str, int]],
                            quiet_secs: float) -> list[InstanceAdded]:
        """``add_instance`` for many durable files (meta, path, size) in one transaction: all
        indexed, or none (the whole call raises). Returns one ``InstanceAdded`` per row, in
        order. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def studies_due(self, now: float) -> list[StudyRow]:
        """Receiving studies whose quiet period has passed or that reached their expected count.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def complete_study(self, uid: str, *, announce: bool = False) -> list[CaseRow]:
        """Mark a study complete (explicit trigger or timer) and correlate; returns new cases.

        *announce*: signal running engines of the new cases in the same transaction (a
        change made outside the engine: see ``engine.store.signals``).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def apply_patient(self, event: str, patient: Patient) -> list[CaseRow]:
        """Upsert a patient (ADT); a merge re-links orders and studies and correlates again.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def apply_orders(self, orders: Sequence[Order], message_id: int | None
                           ) -> list[CaseRow]:
        """Upsert orders, cancel their cases when cancelled, correlate; returns new cases.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def get_study(self, uid: str) -> StudyRow | None:
        """One study (None: no such study).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_studies(self, state: str | None = None, limit: int = 100) -> list[StudyRow]:
        """Studies, latest activity first (only those in *state*, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_orders(self, limit: int = 100) -> list[OrderRow]:
        """Orders, newest first.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def list_cases(self, state: str | None = None, limit: int = 100) -> list[CaseRow]:
        """Cases, newest first (only those in *state*, if given).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def unmatched(self, older_than: float) -> tuple[list[OrderRow], list[StudyRow]]:
        """Orders without a study and complete studies without an order, older than a time.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def proceed_study_only(self, uid: str, *, announce: bool = False) -> CaseRow | None:
        """Let an unmatched complete study go on without its order (*announce*: as for
        ``complete_study``). Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def get_case(self, case_id: int) -> CaseRow | None:
        """One case (None: no such case).
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def get_order(self, order_id: int) -> tuple[OrderRow, int | None] | None:
        """An order and the id of the message that last changed it.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def study_counts(self) -> dict[str, int]:
        """Studies by state. Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def instance_paths(self, study_uid: str) -> list[str]:
        """The files of a study's instances, by series and SOP UID.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def prune_instances(self, before: float) -> list[str]:
        """Forget instances received before *before*; returns their file paths to delete.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
