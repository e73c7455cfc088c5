"""Inbound HL7 v2 ADT, ORM^O01 and OMI^O23 -> domain objects (Patient, Order).

Pure functions, no I/O. ``map_message(raw)`` is the one entry point: it reads
the bytes leniently (any segment terminator, the message's own delimiters from
MSH-1/MSH-2, MSH-18 charset, Z-segments anywhere, missing optional segments),
dispatches on MSH-9 and returns a :class:`PatientEvent` or an
:class:`OrderEvent` (domain events of ``engine.model``, which the store applies).
Anything it cannot map raises :class:`MappingError`, whose
text names the segment or field at fault and quotes no message content
beyond a well-formed message type (``ORU^R01``).

Which field carries which value comes from a per-channel
:class:`~mappings.hl7v2.fieldmap.FieldMap`. Orders are grouped by ORC: every
segment up to the next ORC belongs to that order (a second OBR without its own
ORC starts a new order that shares the ORC). An order's fields are looked up in
its group first and then among the segments before the first ORC, so a ZDS
sent before the ORC still reaches a single order. Of several IPC segments in
one order, the first is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from engine.model import Identifier, Order, OrderEvent, Patient, PatientEvent
from mappings.hl7v2.fieldmap import (
    FieldMap,
    FieldPath,
    ReaderSegmentView,
    Repetitions,
    Scope,
    SegmentView,
    component,
)
from mappings.hl7v2.orderfix import unglue_orc
from mappings.hl7v2.reader import Message, parse
from mappings.uid import uid_problem

ADT_EVENTS = frozenset(f"A{n:02d}" for n in (*range(1, 9), 11, 12, 13, 18, 28, 31, 34, 40))
MERGE_EVENTS = frozenset({"A18", "A34", "A40"})
ORDER_MESSAGES = frozenset({("ORM", "O01"), ("OMI", "O23")})
_DEFAULT_TRIGGER = {"ORM": "O01", "OMI": "O23"}

# HL7 table 0027 (priority): stat, ASAP, routine, pre-op, callback, timing critical.
PRIORITY_CODES = frozenset({"S", "A", "R", "P", "C", "T"})
# Words senders put in a priority field in place of the code.
PRIORITY_WORDS = {
    "STAT": "S",
    "ASAP": "A",
    "URGENT": "A",
    "ROUTINE": "R",
    "PREOP": "P",
    "CALLBACK": "C",
    "TIMING CRITICAL": "T",
}

_MSH_10 = FieldPath("MSH", 10)
_MSH_18 = FieldPath("MSH", 18)
_EVN_1 = FieldPath("EVN", 1)
_TYPE_CODE = re.compile(r"[A-Z0-9]{3}")
_DTM = re.compile(r"(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(?:\.(\d{1,4}))?([+-]\d{4})?")


class MappingError(ValueError):
    """A message that cannot be mapped to domain objects (answer AE, do not retry).

    ``reason`` is a sentence naming the segment or field ("PID-3 is empty");
    ``location`` is the HL7 path alone ("PID-3", "MSH-9", "PID"), or None when
    the message as a whole is unreadable. Neither quotes patient data.
    """

    def __init__(self, reason: str, location: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location


def map_message(
    raw: bytes, fieldmap: FieldMap | None = None, notes: list[str] | None = None
) -> PatientEvent | OrderEvent:
    """Map raw HL7 v2 bytes to a PatientEvent (ADT) or an OrderEvent (ORM^O01, OMI^O23).

    Raises MappingError, naming the field, for anything it cannot map: no MSH,
    unusable delimiters, an unsupported MSH-9, a missing PID-3 or order number.
    What it mapped leniently is appended to *notes*, one sentence each, quoting no patient
    data: the patient id read from a fallback path (PID-2), a Study Instance UID that breaks
    the UID grammar (not stored), an ORC glued onto the segment before it.
    """
    msg = parse_message(raw)
    code, event = message_type(msg)
    if code == "ADT":
        return map_patient(msg, fieldmap, notes)
    if (code, event) not in ORDER_MESSAGES:
        raise MappingError(f"MSH-9 {code}^{event} is not ADT, ORM^O01 or OMI^O23", "MSH-9")
    orders = map_order(msg, fieldmap, notes)
    control_id, _ = Scope(_views(msg)).value([_MSH_10])
    return OrderEvent(f"{code}^{event}", event, control_id, orders[0].patient, orders)


def parse_message(raw: bytes) -> Message:
    """Read raw bytes with the lazy reader (:mod:`mappings.hl7v2.reader`).

    Any terminator, a BOM, MSH-18 decoding and stray line breaks inside a field are handled
    there. The delimiters are the message's own (MSH-1, MSH-2); they must be distinct,
    non-alphanumeric characters. Raises MappingError if the bytes are not HL7.
    """
    msg = parse(raw)
    segments = msg.segments()
    _check_delimiters(segments[0].text if segments else "")
    return msg


def message_type(msg: Message) -> tuple[str, str]:
    """MSH-9 as (message code, trigger event), upper-case; the trigger falls back to EVN-1.

    Raises MappingError unless both are three letters or digits (the trigger may be
    absent for ORM and OMI, whose only triggers are O01 and O23).
    """
    scope = Scope(_views(msg))
    msh = scope.find("MSH")
    reps = msh.repetitions(9) if msh else []
    code = (component(reps[0], 1) if reps else None) or ""
    trigger = (component(reps[0], 2) if reps else None) or scope.value([_EVN_1])[0]
    if not code:
        raise MappingError("MSH-9 (message type) is empty", "MSH-9")
    code = code.upper()
    trigger = (trigger or _DEFAULT_TRIGGER.get(code, "")).upper()
    if not (_TYPE_CODE.fullmatch(code) and _TYPE_CODE.fullmatch(trigger)):
        raise MappingError("MSH-9 is not a message type like ADT^A01 or ORM^O01", "MSH-9")
    return code, trigger


def map_patient(
    msg: Message, fieldmap: FieldMap | None = None, notes: list[str] | None = None
) -> PatientEvent:
    """Map a parsed ADT message (A01, A04, A08, A03, A11, A40 merge ...) to a PatientEvent.

    For merges (A18, A34, A40) the MRG-1 identifiers become ``Patient.merged_from``;
    a merge message carrying several PID/MRG pairs is refused rather than half-mapped.
    """
    fm = fieldmap or FieldMap()
    code, event = message_type(msg)
    if code != "ADT" or event not in ADT_EVENTS:
        raise MappingError(f"MSH-9 {code}^{event} is not an ADT event this mapping reads", "MSH-9")
    views = _views(msg)
    scope = Scope(views)
    patient = _patient(scope, fm, notes)
    if event in MERGE_EVENTS:
        if sum(v.name == "PID" for v in views) > 1:
            raise MappingError(f"{event} carries several PID/MRG pairs; send one each", "PID")
        patient.merged_from = _identifiers(scope.repetitions(fm.merged_from))
        if not patient.merged_from:
            raise _missing(scope, fm.merged_from)
    control_id, _ = scope.value([_MSH_10])
    return PatientEvent(f"ADT^{event}", event, control_id, patient)


def map_order(
    msg: Message, fieldmap: FieldMap | None = None, notes: list[str] | None = None
) -> list[Order]:
    """Map a parsed ORM^O01 or OMI^O23 to one Order per ORC group, each with the patient.

    Every order must carry an order control (ORC-1) and at least one of the
    placer number, filler number or accession; otherwise MappingError. An ORC glued onto
    the segment before it (its terminator lost) is read where it starts
    (:func:`mappings.hl7v2.orderfix.unglue_orc`), noted in *notes*.
    """
    fm = fieldmap or FieldMap()
    code, event = message_type(msg)
    if (code, event) not in ORDER_MESSAGES:
        raise MappingError(f"MSH-9 {code}^{event} is not an order this mapping reads", "MSH-9")
    found = unglue_orc(msg)
    if found is not None and notes is not None:
        notes.append(found)
    views = _views(msg)
    header, groups = _order_groups(views)
    if not groups:
        raise MappingError(f"{code}^{event} has no ORC segment", "ORC")
    patient = _patient(Scope(views), fm, notes)
    many = len(groups) > 1
    return [
        _order(Scope(group, header), patient, fm, f" (order {n})" if many else "", notes)
        for n, group in enumerate(groups, start=1)
    ]


def parse_timestamp(text: str) -> datetime:
    """Parse an HL7 DTM/TS value (``YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]``).

    Missing parts default to the start of the period; an offset gives an aware
    datetime, no offset a naive one. Raises ValueError when malformed.
    """
    match = _DTM.fullmatch(text.strip())
    if match is None:
        raise ValueError("not an HL7 timestamp")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    date = (int(year), int(month or 1), int(day or 1))
    time = (int(hour or 0), int(minute or 0), int(second or 0), int((frac or "0").ljust(6, "0")))
    return datetime(*date, *time, tzinfo=_utc_offset(offset))


def _utc_offset(text: str | None) -> timezone | None:
    if not text:
        return None
    hours, minutes = int(text[1:3]), int(text[3:5])
    if minutes >= 60:
        raise ValueError("timezone offset minutes out of range")
    return timezone((-1 if text[0] == "-" else 1) * timedelta(hours=hours, minutes=minutes))


def _check_delimiters(text: str) -> None:
    if len(text) < 4 or not text.startswith("MSH"):
        raise MappingError("message does not start with an MSH segment", "MSH")
    end = text.find(text[3], 4)
    delimiters = text[3:end] if end != -1 else text[3:]
    if (
        len(delimiters) > 6
        or len(set(delimiters)) != len(delimiters)
        or any(c.isalnum() or c.isspace() for c in delimiters)
    ):
        raise MappingError("MSH-1/MSH-2 do not hold distinct, usable delimiters", "MSH-2")
    if end == -1:
        raise MappingError("MSH-9 (message type) is empty", "MSH-9")


def segment_views(msg: Message) -> list[SegmentView]:
    """One view per segment of *msg*; a view splits its segment only when read."""
    segments = msg.segments()
    if not segments:
        return []
    charset = ReaderSegmentView(segments[0], msg, None).value(_MSH_18)
    return [ReaderSegmentView(seg, msg, charset) for seg in segments]


_views = segment_views


def _order_groups(
    views: Sequence[SegmentView],
) -> tuple[list[SegmentView], list[list[SegmentView]]]:
    """Split segments into the header (before the first ORC/OBR) and one group per order."""
    header: list[SegmentView] = []
    groups: list[list[SegmentView]] = []
    for seg in views:
        if seg.name == "ORC":
            groups.append([seg])
        elif seg.name == "OBR" and (not groups or any(s.name == "OBR" for s in groups[-1])):
            shared_orc = [s for s in groups[-1] if s.name == "ORC"][:1] if groups else []
            groups.append([*shared_orc, seg])
        elif groups:
            groups[-1].append(seg)
        else:
            header.append(seg)
    return header, groups


def _patient(scope: Scope, fm: FieldMap, notes: list[str] | None = None) -> Patient:
    identifiers, path = _patient_ids(scope, fm.patient_identifiers)
    if not identifiers:
        raise _missing(scope, fm.patient_identifiers)
    paths = fm.patient_identifiers
    if path != paths[0] and notes is not None:
        before = " / ".join(str(p) for p in paths[: paths.index(path)])
        notes.append(f"patient id read from {path}: {before} held no identifier")
    family, given = _name(scope.repetitions(fm.patient_name))
    birth_date = _read(scope, fm, "birth_date")
    if birth_date and birth_date[:8].isdigit():
        birth_date = birth_date[:8]  # drop any time of birth; the date stays as sent
    return Patient(
        identifiers=identifiers,
        family_name=family,
        given_name=given,
        birth_date=birth_date,
        sex=_read(scope, fm, "sex"),
        patient_class=_read(scope, fm, "patient_class"),
        location=_read(scope, fm, "location"),
    )


def _patient_ids(
    scope: Scope, paths: Sequence[FieldPath]
) -> tuple[list[Identifier], FieldPath | None]:
    """The identifiers of the first of *paths* that holds one (a CX.1), with that path."""
    for n in range(len(paths)):
        reps, found = scope.repetitions_from(paths[n : n + 1])
        identifiers = _identifiers(reps)
        if identifiers:
            return identifiers, found
    return [], None


def _identifiers(reps: Repetitions) -> list[Identifier]:
    """CX repetitions -> Identifiers: CX.1 value, CX.4 issuer (HD namespace or OID), CX.5 type."""
    return [
        Identifier(
            value=value,
            issuer=component(rep, 4, 1) or component(rep, 4, 2),
            type_code=component(rep, 5),
        )
        for rep in reps
        if (value := component(rep, 1))
    ]


def _name(reps: Repetitions) -> tuple[str | None, str | None]:
    """XPN: the legal name (XPN.7 = L) if one is sent, else the first; FN.1 surname, XPN.2."""
    named = [rep for rep in reps if component(rep, 1) or component(rep, 2)]
    if not named:
        return None, None
    rep = next((r for r in named if (component(r, 7) or "").upper() == "L"), named[0])
    return component(rep, 1, 1), component(rep, 2)


def _order(
    scope: Scope, patient: Patient, fm: FieldMap, which: str, notes: list[str] | None = None
) -> Order:
    control = _read(scope, fm, "order_control")
    if not control:
        raise _missing(scope, fm.order_control, which)
    placer = _read(scope, fm, "placer_number")
    filler = _read(scope, fm, "filler_number")
    accession = _read(scope, fm, "accession")
    if not (placer or filler or accession):
        paths = ", ".join(map(str, (*fm.placer_number, *fm.filler_number, *fm.accession)))
        raise MappingError(
            f"no order number: {paths} are all empty{which}", _first(fm.placer_number)
        )
    code_reps = scope.repetitions(fm.procedure_code)
    code = code_reps[0] if code_reps else []
    return Order(
        patient=patient,
        control=control.upper(),
        placer_number=placer,
        filler_number=filler,
        accession=accession,
        requested_procedure_id=_read(scope, fm, "requested_procedure_id"),
        study_instance_uid=_study_uid(scope, fm, which, notes),
        modality=_read(scope, fm, "modality"),
        procedure_code=component(code, 1),
        procedure_text=component(code, 2),
        procedure_system=component(code, 3),
        priority=normalise_priority(_read(scope, fm, "priority")),
        status=_read(scope, fm, "order_status"),
        ordered_at=_timestamp(scope, fm.ordered_at, which),
    )


def normalise_priority(value: str | None) -> str | None:
    """A priority as its HL7 table 0027 code (``stat`` -> ``S``); any other value as given."""
    if value is None:
        return None
    key = value.strip().upper()
    if key in PRIORITY_CODES:
        return key
    return PRIORITY_WORDS.get(key, value)


def priority_flags(event: OrderEvent, fieldmap: FieldMap | None = None) -> list[str]:
    """What the priorities of *event* say that did not map: one sentence per order.

    A priority that is neither an HL7 table 0027 code nor a value the channel's value map
    produces was stored as sent; the sentence names the order, not patient data.
    """
    produced = set((fieldmap or FieldMap()).values.get("priority", {}).values())
    many = len(event.orders) > 1
    return [
        f"priority {order.priority!r}{f' (order {n})' if many else ''} is not in HL7 table "
        "0027 (S, A, R, P, C, T) nor the channel's value map; stored as sent"
        for n, order in enumerate(event.orders, start=1)
        if order.priority is not None
        and order.priority not in PRIORITY_CODES
        and order.priority not in produced
    ]


def _study_uid(scope: Scope, fm: FieldMap, which: str, notes: list[str] | None) -> str | None:
    """The Study Instance UID (ZDS-1, IPC-3), or None when it breaks the UID grammar (noted:
    a bad UID stored would never meet its study, and could name a folder)."""
    value, path = scope.value(fm.study_instance_uid)
    uid = fm.mapped("study_instance_uid", value)
    problem = uid_problem(uid) if uid is not None else None
    if problem is None:
        return uid
    if notes is not None:
        notes.append(f"study instance UID in {path}{which} is not a valid DICOM UID "
                     f"({problem}): not stored")
    return None


def _read(scope: Scope, fm: FieldMap, key: str) -> str | None:
    """The value of FieldMap *key*: the first non-empty of its paths, through its value map."""
    return fm.mapped(key, scope.value(getattr(fm, key))[0])


def _timestamp(scope: Scope, paths: Sequence[FieldPath], which: str) -> datetime | None:
    text, path = scope.value(paths)
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise MappingError(
            f"{path} is not an HL7 timestamp (YYYYMMDD[HHMM[SS]][+ZZZZ]){which}", str(path)
        ) from None


def _missing(scope: Scope, paths: Sequence[FieldPath], which: str = "") -> MappingError:
    """The error for a required value none of *paths* holds: a missing segment or empty field."""
    if paths and all(scope.find(p.segment) is None for p in paths):
        segments = " / ".join(dict.fromkeys(p.segment for p in paths))
        return MappingError(f"{segments} segment is missing{which}", paths[0].segment)
    names = " / ".join(map(str, paths))
    return MappingError(f"{names} {'are' if len(paths) > 1 else 'is'} empty{which}", _first(paths))


def _first(paths: Sequence[FieldPath]) -> str | None:
    return str(paths[0]) if paths else None
