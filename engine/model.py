"""The domain model shared by every package.

Message statuses follow one explicit machine (see ``Status``); the clinical
objects (Patient, Order, Study, Case, Finding, WorklistItem) are plain
dataclasses so mappings stay pure and testable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Status(enum.StrEnum):
    """Message status machine.

    ``RECEIVED -> FILTERED | TRANSFORMED -> QUEUED -> SENT | ERROR``.
    FILTERED, TRANSFORMED (when no destination applies), SENT and ERROR are
    final; RECEIVED and QUEUED are re-driven at start-up.
    """

    RECEIVED = "RECEIVED"
    FILTERED = "FILTERED"
    TRANSFORMED = "TRANSFORMED"
    QUEUED = "QUEUED"
    SENT = "SENT"
    ERROR = "ERROR"

    @property
    def final(self) -> bool:
        return self not in (Status.RECEIVED, Status.QUEUED)


class DeliveryStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """Which delivery a destination is sending: our own ids (file names, logs), never
    anything taken from the message."""

    message_id: int
    delivery_id: int


@dataclass(slots=True)
class Message:
    """A stored message with its content layers (raw -> mapped -> sent -> response)."""

    id: int
    channel: str
    received_at: float
    status: Status
    raw: bytes
    control_id: str | None = None
    message_type: str | None = None
    key: str | None = None
    duplicate: bool = False
    error: str | None = None
    layers: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Identifier:
    """A CX identifier: value plus the assigning authority (issuer)."""

    value: str
    issuer: str | None = None
    type_code: str | None = None


@dataclass(slots=True)
class Patient:
    identifiers: list[Identifier]
    family_name: str | None = None
    given_name: str | None = None
    birth_date: str | None = None  # YYYYMMDD as sent
    sex: str | None = None
    patient_class: str | None = None  # PV1-2: E (emergency), I, O ...
    location: str | None = None  # PV1-3 point of care
    merged_from: list[Identifier] = field(default_factory=list)  # A40 MRG-1

    @property
    def primary_id(self) -> Identifier | None:
        return self.identifiers[0] if self.identifiers else None


class OrderControl(enum.StrEnum):
    NEW = "NW"
    STATUS_CHANGED = "SC"
    CHANGE = "XO"
    CANCEL = "CA"
    DISCONTINUE = "DC"
    CANCELLED = "OC"


@dataclass(slots=True)
class Order:
    patient: Patient
    control: str  # ORC-1 (NW, SC, XO, CA, DC, OC ...)
    placer_number: str | None = None  # ORC-2
    filler_number: str | None = None  # ORC-3
    accession: str | None = None  # OBR-18 / IPC-1
    requested_procedure_id: str | None = None  # OBR-19 / IPC-2
    study_instance_uid: str | None = None  # ZDS-1 / IPC-3
    modality: str | None = None  # OBR-24 / IPC-5
    procedure_code: str | None = None  # OBR-4.1
    procedure_text: str | None = None  # OBR-4.2
    procedure_system: str | None = None  # OBR-4.3
    priority: str | None = None  # ORC-7.6 / OBR-27.6 / TQ1-9 (S, A, R ...)
    status: str | None = None  # ORC-5 (SC, IP, CM, CA ...)
    ordered_at: datetime | None = None


@dataclass(slots=True)
class PatientEvent:
    """A patient changed (admitted, updated, merged...): ``event`` is the sender's trigger
    (``A01``, ``A08``, ``A40``...). What the orders processor hands the store, which applies
    it in the transaction that records its message."""

    message_type: str
    event: str
    control_id: str | None
    patient: Patient


@dataclass(slots=True)
class OrderEvent:
    """Orders placed or changed for one patient: the patient and every order the message
    carries (applied by the store like ``PatientEvent``, then correlated with studies)."""

    message_type: str
    event: str
    control_id: str | None
    patient: Patient
    orders: list[Order]


@dataclass(slots=True)
class Study:
    study_instance_uid: str
    accession: str | None = None
    patient_id: str | None = None
    patient_issuer: str | None = None
    modality: str | None = None
    body_part: str | None = None
    series_count: int = 0
    instance_count: int = 0
    state: str = "receiving"  # receiving -> complete
    revision: int = 0


@dataclass(slots=True)
class Case:
    """An order joined with its complete study."""

    id: int
    order: Order | None
    study: Study


@dataclass(slots=True)
class Finding:
    """One model output worth reporting.

    ``coding_system`` is a DICOM coding scheme designator (SCT, RADLEX, LN, 99RADBRIDGE);
    ``demo`` marks output that is not a clinical finding (the built-in demo-cxr);
    ``mode`` "shadow" findings are kept and audited but never sent; ``criticality`` is
    none | low | high | critical (``critical`` is true for the last).
    """

    code: str
    display: str
    coding_system: str
    probability: float | None
    critical: bool
    model_name: str
    model_version: str
    location: str | None = None
    demo: bool = False
    criticality: str = "none"
    mode: str = "second_reader"
    detail: str | None = None  # e.g. the measured value of a QA rule; never patient data


@dataclass(slots=True)
class WorklistItem:
    case_id: int
    priority: str
    reason: str
