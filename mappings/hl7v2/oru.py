"""An AI report -> ORU^R01 (HL7 v2.5.1, or 2.3.1 for older receivers), validated before it leaves.

Strict out: every ORU is parsed back with hl7apy at STRICT level and validated
against the version's message structure; anything hl7apy rejects raises
:class:`OutboundInvalid` naming the segment and field, and nothing is sent.

What the message says, and why::

    MSH   ORU^R01[^ORU_R01]; MSH-10 = report id + "-ORU" (a retry replaces, never duplicates)
    PID   report.patient (no patient: OutboundInvalid; an EHR cannot file a result without one)
    ORC   RE, placer (ORC-2), filler (ORC-3)
    OBR   placer/filler echoed, OBR-4 procedure (18748-4 Diagnostic imaging study^LN without an
          order), OBR-7 study time, OBR-18 accession, OBR-19 requested procedure id, OBR-22
          result time, OBR-24 section from the modality, OBR-25 P: AI output is a second read
    NTE   the disclaimer; a DEMO warning when any model or finding is a demo; one per failed model
    OBX   per finding n (OBX-4 = n groups them):
            CWE (CE in 2.3.1) 121071^Finding^DCM = code^display^system, OBX-9 the probability
            NM  AIPROB^Probability of the finding (AI)^99RADBRIDGE = probability, units 1^^UCUM
                (UCUM's unity: the model's 0..1 value sent as is, no rescaling), OBX-7 0-1
            TX  AINOTE^AI finding note^99RADBRIDGE = location and detail, when there are any
          per model that ran and found nothing: one CWE OBX = NOFINDING^...^99RADBRIDGE
          every OBX: OBX-11 P, OBX-14 the report time, OBX-17 the AI method, OBX-18 the model
          as name:version (2.3.1 has no OBX-18: the model is a second OBX-17 repetition)

Coding systems arrive as DICOM coding scheme designators and leave as HL7 table 0396
names (``coding_system``). Free text is escaped (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``) and control
characters become spaces, so no value can break a segment or an MLLP frame.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from engine.model import Finding
from engine.results.model import AIReport, ModelRun, ReportPatient
from mappings.hl7v2.ack import escape

VERSIONS = ("2.5.1", "2.3.1")
LOCAL_SYSTEM = "99RADBRIDGE"
AI_METHOD = f"AI^Artificial intelligence algorithm^{LOCAL_SYSTEM}"
FINDING_CONCEPT = "121071^Finding^DCM"
PROBABILITY_CONCEPT = f"AIPROB^Probability of the finding (AI)^{LOCAL_SYSTEM}"
NOTE_CONCEPT = f"AINOTE^AI finding note^{LOCAL_SYSTEM}"
NO_FINDING = f"NOFINDING^No finding detected by the AI model^{LOCAL_SYSTEM}"
IMAGING_STUDY = "18748-4^Diagnostic imaging study^LN"
DISCLAIMER = ("AI-generated preliminary result for a second read; not a final report and not a "
              "diagnosis. A radiologist's report is authoritative.")
DEMO_NOTE = ("DEMO output from a model trained on nothing: not a clinical finding. Do not use "
             "for patient care.")

# DICOM coding scheme designator -> HL7 table 0396. SRT is DICOM's retired designator for
# SNOMED; HL7 names SNOMED CT "SCT". The others (LN, DCM, UCUM, RADLEX, 99xxx local codes) are
# spelled the same on both sides; an unknown designator passes through unchanged.
CODING_SYSTEMS = {"SCT": "SCT", "SRT": "SCT", "SNM3": "SNM3", "LN": "LN", "DCM": "DCM",
                  "UCUM": "UCUM", "RADLEX": "RADLEX"}

# DICOM modality -> HL7 table 0074 diagnostic service section (OBR-24); RAD otherwise.
SERVICE_SECTIONS = {"CR": "RX", "DX": "RX", "RF": "RX", "XA": "RX", "MG": "RX", "CT": "CT",
                    "MR": "NMR", "NM": "NMS", "PT": "NMS"}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_OID = re.compile(r"[0-2](\.\d+)+")
_DATE = re.compile(r"\d{4}(\d\d(\d\d(\d\d(\d\d(\d\d(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?")
_FIELD_NAME = re.compile(r"\b([A-Z][A-Z0-9]{2})_(\d+)\b")


class OutboundInvalid(ValueError):
    """What we were about to send is not valid HL7 (or cannot be filed): do not send, do not retry.

    ``location`` is the HL7 path at fault (``PID``, ``OBX-18``) or None when unknown.
    """

    def __init__(self, reason: str, location: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location


def build_oru(report: AIReport, *, version: str = "2.5.1", sending_application: str = "RADBRIDGE",
              sending_facility: str = "RADBRIDGE", receiving_application: str | None = None,
              receiving_facility: str | None = None) -> bytes:
    """The ORU^R01 of *report*, ``\\r``-separated, validated with hl7apy before it is returned.

    The same report gives the same bytes. Raises OutboundInvalid when the report has no
    patient, the version is not 2.5.1 or 2.3.1, or hl7apy rejects the message.
    """
    if version not in VERSIONS:
        raise OutboundInvalid(f"ORU version {version!r} is not one of {', '.join(VERSIONS)}",
                              "MSH-12")
    if report.patient is None:
        raise OutboundInvalid("the report has no patient: no EHR can file an ORU without PID",
                              "PID")
    structure = "ORU^R01^ORU_R01" if version == "2.5.1" else "ORU^R01"
    segments = [
        msh(report, structure, f"{report.report_id}-ORU", version, sending_application,
            sending_facility, receiving_application, receiving_facility),
        pid(report.patient),
        orc("RE", report),
        obr(report, results=True),
        *_notes(report),
        *_observations(report, version),
    ]
    text = with_charset("\r".join(segments))
    validate(text)
    return text.encode("utf-8")


# --- segments shared with the order update -------------------------------------------------


def msh(report: AIReport, structure: str, control_id: str, version: str, app: str,
        facility: str, receiving_app: str | None, receiving_facility: str | None) -> str:
    """MSH-1 to MSH-12 (``with_charset`` adds MSH-18 when the message needs it)."""
    fields = ["MSH", "^~\\&", esc(app), esc(facility), esc(receiving_app),
              esc(receiving_facility), hl7_time(report.reported_at), "", structure,
              esc(control_id), "P", version]
    return segment(fields)


def pid(patient: ReportPatient) -> str:
    """PID-3 with its issuer (an OID goes to HD-2/HD-3 ISO), PID-5, PID-7, PID-8."""
    issuer = patient.issuer or ""
    authority = f"&{issuer}&ISO" if _OID.fullmatch(issuer) else esc(issuer)
    identifier = f"{esc(patient.patient_id)}^^^{authority}".rstrip("^")
    # A name is required (PID-5); without one the name type alone says it is unspecified.
    name = f"{esc(patient.family)}^{esc(patient.given)}".rstrip("^") or "^^^^^^U"
    # A malformed birth date is left out rather than sent: EHRs match patients on it.
    birth = patient.birth_date if patient.birth_date and _DATE.fullmatch(patient.birth_date) else ""
    return segment(["PID", "1", "", identifier, "", name, "", birth, esc(patient.sex)])


def orc(control: str, report: AIReport, *extra: str) -> str:
    """ORC-1 *control*, ORC-2 placer, ORC-3 filler, then *extra* fields from ORC-4 on."""
    order = report.order
    return segment(["ORC", control, esc(order.placer if order else None),
                    esc(order.filler if order else None), *extra])


def obr(report: AIReport, *, results: bool) -> str:
    """OBR echoing the order; with *results*, the observation/result times, section and status."""
    order = report.order
    procedure = IMAGING_STUDY
    if order and order.procedure_code:
        procedure = "^".join([esc(order.procedure_code), esc(order.procedure_text),
                              esc(order.procedure_system)]).rstrip("^")
    fields = [""] * 26
    fields[:5] = ["OBR", "1", esc(order.placer if order else None),
                  esc(order.filler if order else None), procedure]
    fields[18] = esc(report.accession or (order.accession if order else None))
    fields[19] = esc(order.requested_procedure_id if order else None)
    if results:
        fields[7] = hl7_time(report.study_completed_at or report.reported_at)
        fields[22] = hl7_time(report.reported_at)
        modality = (report.modality or (order.modality if order else None) or "").upper()
        fields[24] = SERVICE_SECTIONS.get(modality, "RAD")
        fields[25] = "P"
    return segment(fields)


def nte(set_id: int, text: str) -> str:
    return segment(["NTE", str(set_id), "O", esc(text)])


def segment(fields: list[str]) -> str:
    """Join fields with ``|``, dropping trailing empty ones (MSH keeps MSH-2)."""
    return "|".join(fields).rstrip("|")


def esc(text: str | None) -> str:
    """*text* with HL7 delimiters escaped and control characters (CR, LF, VT, FS ...) as spaces."""
    if not text:
        return ""
    return _CONTROL.sub(" ", escape(text, None))


def hl7_time(epoch: float) -> str:
    """An HL7 TS in UTC, to the second: ``YYYYMMDDHHMMSS+0000``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M%S+0000")


def with_charset(text: str) -> str:
    """*text* with MSH-18 = UNICODE UTF-8 when it needs more than ASCII (it is sent as UTF-8)."""
    if text.isascii():
        return text
    head, sep, rest = text.partition("\r")
    fields = head.split("|")
    fields += [""] * (18 - len(fields))
    fields[17] = "UNICODE UTF-8"
    return "|".join(fields) + sep + rest


# --- hl7apy validation ------------------------------------------------------------------------


def validate(text: str) -> None:
    """Parse *text* with hl7apy at STRICT level and validate it; OutboundInvalid names the field.

    hl7apy reports a bad value from deep inside its parser without saying where it was, so on
    failure each segment, then each field, is parsed alone to find the one at fault. The
    reason never quotes a value (it may be patient data): only paths and hl7apy's verdict.
    """
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except Exception as exc:  # hl7apy raises assorted types, all meaning "invalid"
        location, cause = _locate(text)
        location = location or _named_location(str(exc))
        where = f"{location}: " if location else ""
        reason = f"hl7apy rejects the message: {where}{_verdict(cause or exc)}"
        raise OutboundInvalid(reason, location) from exc


_VERDICTS = {"MaxLengthReached": "a value is longer than its data type allows",
             "OperationNotAllowed": "this field or segment is not defined in this version",
             "InvalidName": "this field or segment is not defined in this version",
             "InvalidDateFormat": "not a valid date", "InvalidDateOfBirth": "not a valid date",
             "InvalidHighlightRange": "invalid formatting escape"}


def _verdict(exc: Exception) -> str:
    """What hl7apy objected to, without the value: structural messages name only elements."""
    from hl7apy.exceptions import ValidationError

    kind = type(exc).__name__
    if isinstance(exc, ValidationError):
        return _FIELD_NAME.sub(r"\1-\2", str(exc))
    return f"{_VERDICTS.get(kind, 'invalid value')} ({kind})"


def _locate(text: str) -> tuple[str | None, Exception | None]:
    """The first ``SEG-n`` (or ``SEG``) hl7apy refuses when parsed on its own, and why."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_field, parse_segment

    version = _version_of(text)
    strict = VALIDATION_LEVEL.STRICT
    for seg in text.split("\r"):
        name = seg[:3]
        try:
            parse_segment(seg, version, validation_level=strict)
            continue
        except Exception as exc:  # narrowed to a field below
            segment_error = exc
        first = 2 if name == "MSH" else 1  # MSH-1 is the "|" itself: after it comes MSH-2
        for number, value in enumerate(seg.split("|")[1:], start=first):
            if name == "MSH" and number == 2:
                continue  # the encoding characters hold the repetition separator itself
            try:
                for rep in value.split("~"):
                    parse_field(rep, f"{name}_{number}", version, validation_level=strict)
            except Exception as exc:
                return f"{name}-{number}", exc
        return name, segment_error
    return None, None


def _version_of(text: str) -> str:
    fields = text.split("\r", 1)[0].split("|")
    return fields[11] if len(fields) > 11 else "2.5.1"


def _named_location(message: str) -> str | None:
    match = _FIELD_NAME.search(message)
    return f"{match[1]}-{match[2]}" if match else None


# --- the report's content ------------------------------------------------------------------


def _notes(report: AIReport) -> list[str]:
    texts = [DISCLAIMER]
    if report.demo:
        texts.append(DEMO_NOTE)
    texts += [f"AI model {m.name} {m.version} did not complete; it gave no result."
              for m in _sent_models(report) if m.state == "error"]
    return [nte(n, text) for n, text in enumerate(texts, start=1)]


def _sent_models(report: AIReport) -> list[ModelRun]:
    return [m for m in report.models if m.mode != "shadow"]


def _observations(report: AIReport, version: str) -> list[str]:
    """One OBX group per finding, then one negative OBX per model that ran and found nothing."""
    groups: list[list[list[str]]] = []
    for finding in report.findings:
        groups.append(_finding_obx(report, finding, version))
    for model in _sent_models(report):
        if model.state == "done" and not report.findings_of(model.name, model.version):
            negative = _obx("CWE", FINDING_CONCEPT, NO_FINDING)
            negative[8] = "N"
            groups.append([_stamp(negative, report, model.name, model.version, version)])
    out: list[str] = []
    for sub_id, group in enumerate(groups, start=1):
        for fields in group:
            fields[1] = str(len(out) + 1)
            fields[4] = str(sub_id)
            out.append(segment(_typed(fields, version)))
    return out


def _finding_obx(report: AIReport, finding: Finding, version: str) -> list[list[str]]:
    report_code = "^".join([esc(finding.code), esc(finding.display),
                            coding_system(finding.coding_system)])
    coded = _obx("CWE", FINDING_CONCEPT, report_code)
    coded[8] = "A"
    group = [coded]
    if finding.probability is not None:
        value = probability_text(finding.probability)
        coded[9] = value
        number = _obx("NM", PROBABILITY_CONCEPT, value)
        number[6], number[7] = "1^^UCUM", "0-1"
        group.append(number)
    note = "; ".join(part for part in (
        f"Location: {finding.location}" if finding.location else "",
        f"Detail: {finding.detail}" if finding.detail else "") if part)
    if note:
        group.append(_obx("TX", NOTE_CONCEPT, esc(note)))
    return [_stamp(fields, report, finding.model_name, finding.model_version, version)
            for fields in group]


def _obx(value_type: str, concept: str, value: str) -> list[str]:
    fields = [""] * 19
    fields[0], fields[2], fields[3], fields[5], fields[11] = "OBX", value_type, concept, value, "P"
    return fields


def _stamp(fields: list[str], report: AIReport, model: str, model_version: str,
           version: str) -> list[str]:
    """OBX-14 the report time, OBX-17 the AI method, OBX-18 the model."""
    fields[14] = hl7_time(report.reported_at)
    equipment = esc(f"{model}:{model_version}")
    if version == "2.5.1":
        fields[17], fields[18] = AI_METHOD, equipment
    else:  # 2.3.1 has no OBX-18: name the model in a second OBX-17 repetition
        fields[17] = f"{AI_METHOD}~{equipment}^{esc(f'{model} {model_version}')}^{LOCAL_SYSTEM}"
    return fields


def _typed(fields: list[str], version: str) -> list[str]:
    if version != "2.5.1" and fields[2] == "CWE":
        fields[2] = "CE"
    return fields


def coding_system(designator: str) -> str:
    """A DICOM coding scheme designator as an HL7 table 0396 name (unknown ones unchanged)."""
    return esc(CODING_SYSTEMS.get(designator.upper(), designator))


def probability_text(value: float) -> str:
    """An NM for a 0..1 probability: at most 4 decimals, no exponent, no trailing zeros."""
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"
