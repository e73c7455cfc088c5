"""The worklist reprioritisation sent to the RIS: ORM^O01 or OMI^O23 with ORC-1 XO.

When an AI finding raises a case's reading priority, the RIS is told with an
order change (ORC-1 = XO) on the order it placed: ORC-2/ORC-3 name the order,
the new priority travels where the site's RIS reads it, and the reason is an
NTE (ORC-16 says only that AI raised it, as a local code)::

    MSH   ORM^O01[^ORM_O01] or OMI^O23^OMI_O23; MSH-10 = report id + "-XO" + priority
    PID   when the report has a patient
    ORC   XO, placer, filler, ORC-7.6 priority ("ORC-7.6"), ORC-9 time, ORC-16 reason code
    TQ1   TQ1-9 priority ("TQ1-9"); ORC-7 then stays empty, as v2.5 deprecates it
    OBR   placer/filler, OBR-4 procedure, OBR-18 accession, OBR-19 requested procedure id,
          OBR-27.6 priority beside ORC-7.6 (IHE SWF: the two must agree)
    NTE   the reason
    IPC   OMI^O23 only: accession, requested procedure id, study instance UID, SPS id, modality

Validation: hl7apy cannot validate ORM^O01 (its ORM_O01 structure demands every segment of
a choice group, crs4/hl7apy#151), so an ORM is checked here: the segment order, the
required fields, and every segment parsed alone by hl7apy at STRICT level (data types and
lengths). OMI^O23 2.5.1 is validated by hl7apy in full, then checked here as well.

ORM^O01 defines no TQ1 segment; with ``priority_field = "TQ1-9"`` it is placed after ORC, as
in OMI/OMG, which RIS that read TQ1 accept. OMI^O23 carries no scheduled procedure step id in
an AI report, so IPC-4 repeats the requested procedure id (single-step orders, the common
case); a RIS that assigns several steps per procedure should be sent ORM^O01.
"""

from __future__ import annotations

from engine.results.model import AIReport
from mappings.hl7v2.oru import (
    LOCAL_SYSTEM,
    OutboundInvalid,
    esc,
    hl7_time,
    msh,
    nte,
    obr,
    orc,
    pid,
    segment,
    validate,
    with_charset,
)

MESSAGES = ("ORM^O01", "OMI^O23")
PRIORITY_FIELDS = ("ORC-7.6", "TQ1-9")
# HL7 table 0027 (ORC-7.6 / OBR-27.6) and 0485 (TQ1-9) share these codes.
PRIORITIES = {"S": "Stat", "A": "ASAP", "R": "Routine", "P": "Preop", "C": "Callback",
              "T": "Timing critical"}
REASON_CODE = f"AIPRIORITY^Priority raised by an AI result^{LOCAL_SYSTEM}"


def build_order_update(report: AIReport, priority: str, reason: str, *,
                       message: str = "ORM^O01", priority_field: str = "ORC-7.6",
                       sending_application: str = "RADBRIDGE",
                       sending_facility: str = "RADBRIDGE", version: str = "2.5.1",
                       receiving_application: str | None = None,
                       receiving_facility: str | None = None) -> bytes:
    """The order change (ORC-1 XO) giving *report*'s order the *priority* (S, A, R ...).

    The same arguments give the same bytes. Raises OutboundInvalid for an unknown message,
    priority field, priority or version, an order the RIS cannot identify (no ORC-2 / ORC-3),
    or a message that fails validation.
    """
    _check_arguments(report, priority, message, priority_field, version)
    tq1 = priority_field == "TQ1-9"
    omi = message == "OMI^O23"
    structure = message if version != "2.5.1" else f"{message}^{message.replace('^', '_')}"
    segments = [msh(report, structure, f"{report.report_id}-XO{priority}", version,
                    sending_application, sending_facility, receiving_application,
                    receiving_facility)]
    if report.patient is not None:
        segments.append(pid(report.patient))
    segments.append(_orc(report, priority, quantity_timing=not tq1))
    if tq1:
        segments.append(segment(["TQ1", "1", *[""] * 7, f"{priority}^{PRIORITIES[priority]}"
                                 "^HL70485"]))
    segments.append(_obr(report, priority, quantity_timing=not tq1))
    if reason.strip():
        segments.append(nte(1, reason.strip()))
    if omi:
        segments.append(_ipc(report))
    text = with_charset("\r".join(segments))
    if omi:
        validate(text)
    check_structure(text, omi=omi, priority=priority, priority_field=priority_field,
                    version=version)
    return text.encode("utf-8")


def _check_arguments(report: AIReport, priority: str, message: str, priority_field: str,
                     version: str) -> None:
    if message not in MESSAGES:
        raise OutboundInvalid(f"order update message {message!r} is not one of "
                              f"{', '.join(MESSAGES)}", "MSH-9")
    if priority_field not in PRIORITY_FIELDS:
        raise OutboundInvalid(f"priority field {priority_field!r} is not one of "
                              f"{', '.join(PRIORITY_FIELDS)}")
    if priority not in PRIORITIES:
        raise OutboundInvalid(f"priority {priority!r} is not an HL7 priority code "
                              f"({', '.join(PRIORITIES)})", priority_field)
    if version not in ("2.5.1", "2.3.1"):
        raise OutboundInvalid(f"order update version {version!r} is not 2.5.1 or 2.3.1",
                              "MSH-12")
    if version != "2.5.1" and (message == "OMI^O23" or priority_field == "TQ1-9"):
        raise OutboundInvalid(f"{message} with {priority_field} needs HL7 2.5.1 "
                              "(v2.3.1 has neither OMI^O23 nor TQ1)", "MSH-12")
    order = report.order
    if order is None or not (order.placer or order.filler):
        raise OutboundInvalid("the report has no placer or filler order number: the RIS "
                              "cannot tell which order to change", "ORC-2")


def _orc(report: AIReport, priority: str, *, quantity_timing: bool) -> str:
    fields = [""] * 13  # ORC-4 .. ORC-16
    if quantity_timing:
        fields[3] = f"^^^^^{priority}"  # ORC-7.6
    fields[5] = hl7_time(report.reported_at)  # ORC-9
    fields[12] = REASON_CODE  # ORC-16
    return orc("XO", report, *fields)


def _obr(report: AIReport, priority: str, *, quantity_timing: bool) -> str:
    text = obr(report, results=False)
    if not quantity_timing:
        return text
    fields = text.split("|")
    fields += [""] * (28 - len(fields))
    fields[27] = f"^^^^^{priority}"  # OBR-27.6, equal to ORC-7.6
    return segment(fields)


def _ipc(report: AIReport) -> str:
    order = report.order
    assert order is not None  # checked in _check_arguments
    procedure = esc(order.requested_procedure_id)
    modality = report.modality or order.modality
    return segment(["IPC", esc(report.accession or order.accession), procedure,
                    esc(report.study_uid), procedure,
                    f"{esc(modality)}^^DCM" if modality else ""])


# --- structural check ------------------------------------------------------------------------

# Segment id -> (may repeat, required) in the order they must appear.
_LAYOUT = (("MSH", False, True), ("PID", False, False), ("ORC", False, True),
           ("TQ1", False, False), ("OBR", False, True), ("NTE", True, False),
           ("IPC", True, False))
_REQUIRED = (("MSH", 9), ("MSH", 10), ("MSH", 12), ("ORC", 1), ("OBR", 4))


def check_structure(text: str, *, omi: bool, priority: str, priority_field: str,
                    version: str = "2.5.1") -> None:
    """What hl7apy cannot check for ORM^O01: segment order, required fields, the priority.

    Every segment is also parsed alone by hl7apy at STRICT level (data types, lengths).
    Raises OutboundInvalid naming the segment or field.
    """
    segments = {seg[:3]: seg.split("|") for seg in text.split("\r")}
    _check_order([seg[:3] for seg in text.split("\r")], omi)
    for name, number in _REQUIRED:
        if not _field(segments[name], name, number):
            raise OutboundInvalid(f"{name}-{number} is empty", f"{name}-{number}")
    if _field(segments["ORC"], "ORC", 1) != "XO":
        raise OutboundInvalid("ORC-1 is not XO (change order)", "ORC-1")
    if priority_field == "TQ1-9":
        sent = _field(segments.get("TQ1", []), "TQ1", 9).partition("^")[0]
    else:
        components = _field(segments["ORC"], "ORC", 7).split("^")
        sent = components[5] if len(components) > 5 else ""
    if sent != priority:
        raise OutboundInvalid(f"{priority_field} does not carry the priority", priority_field)
    if omi and not all(_field(segments["IPC"], "IPC", n) for n in (1, 2, 3, 4)):
        raise OutboundInvalid("IPC-1 to IPC-4 are required in OMI^O23", "IPC")
    for seg in text.split("\r")[1:]:
        _parse_alone(seg, version)


def check_sent(text: str) -> None:
    """What we built and a destination's steps then changed, checked again before it leaves:
    ORU^R01 and OMI^O23 in full by hl7apy, an ORM^O01 order update as ``check_structure``
    does (the segment order, required fields, each segment alone) save the priority, which
    the steps may have moved. Raises OutboundInvalid."""
    fields = text.split("\r", 1)[0].split("|")
    kind = fields[8].split("^")[:2] if len(fields) > 8 else []
    version = fields[11] if len(fields) > 11 else "2.5.1"
    if kind != ["ORM", "O01"]:
        validate(text)
        return
    names = [seg[:3] for seg in text.split("\r")]
    _check_order(names, omi=False)
    segments = {seg[:3]: seg.split("|") for seg in text.split("\r")}
    for name, number in _REQUIRED:
        if not _field(segments[name], name, number):
            raise OutboundInvalid(f"{name}-{number} is empty", f"{name}-{number}")
    for seg in text.split("\r")[1:]:
        _parse_alone(seg, version or "2.5.1")


def _check_order(names: list[str], omi: bool) -> None:
    position = 0
    for name in names:
        while position < len(_LAYOUT) and _LAYOUT[position][0] != name:
            if _LAYOUT[position][2]:
                missing = _LAYOUT[position][0]
                raise OutboundInvalid(f"{missing} segment is missing or out of order", missing)
            position += 1
        if position == len(_LAYOUT):
            raise OutboundInvalid(f"{name} segment is out of order", name)
        if not _LAYOUT[position][1]:
            position += 1
    for name, _, required in _LAYOUT[position:]:
        if required and name not in names:
            raise OutboundInvalid(f"{name} segment is missing", name)
    if omi and "IPC" not in names:
        raise OutboundInvalid("OMI^O23 needs an IPC segment", "IPC")
    if not omi and "IPC" in names:
        raise OutboundInvalid("ORM^O01 has no IPC segment", "IPC")


def _field(fields: list[str], name: str, number: int) -> str:
    index = number - 1 if name == "MSH" else number  # MSH-1 is the separator itself
    return fields[index] if index < len(fields) else ""


def _parse_alone(seg: str, version: str) -> None:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_field

    name = seg[:3]
    for number, value in enumerate(seg.split("|")[1:], start=1):
        for rep in value.split("~"):
            try:
                parse_field(rep, f"{name}_{number}", version,
                            validation_level=VALIDATION_LEVEL.STRICT)
            except Exception as exc:  # hl7apy raises assorted types, all meaning "invalid"
                raise OutboundInvalid(f"hl7apy rejects {name}-{number} ({type(exc).__name__})",
                                      f"{name}-{number}") from exc
