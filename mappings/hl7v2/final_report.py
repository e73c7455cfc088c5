"""The radiologist's final report, read from the RIS's ORU^R01, for AI agreement statistics.

Lenient in: any segment terminator (``\\r``, ``\\n``, ``\\r\\n``), the message's own
delimiters and MSH-18 charset (the same reading as the order mappings), Z-segments
anywhere, missing optional segments. What the engine needs is the order the report belongs
to and the codes it carries; the codes are compared with the AI findings of that case.

Where each value comes from:

- accession: OBR-18, else OBR-3 (RIS that use the filler number as the accession)
- placer / filler: OBR-2 / OBR-3, else ORC-2 / ORC-3
- patient_id: PID-3, first repetition
- status: OBR-25 (F final, C corrected, P preliminary ...)
- codes: every OBX-3, and every OBX-5 of a coded type (CE, CWE, CNE), as (code, system,
  display), each (code, system) once, in message order
- text: OBX-5 of TX, FT and ST observations, one line per repetition, in message order

Of several OBR segments, the first one that names an order is read for the identifiers and
the status; codes and text come from every OBX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from mappings.hl7v2.fieldmap import FieldPath, Repetitions, SegmentView, component
from mappings.hl7v2.orders import MappingError, message_type, parse_message, segment_views

CODED_TYPES = frozenset({"CE", "CWE", "CNE"})
TEXT_TYPES = frozenset({"TX", "FT", "ST"})
_MSH_10 = FieldPath("MSH", 10)


class Code(NamedTuple):
    code: str
    system: str | None
    display: str | None


@dataclass(slots=True)
class FinalReport:
    """An inbound ORU^R01 read for agreement: which order, what status, which codes."""

    control_id: str | None
    accession: str | None
    placer: str | None
    filler: str | None
    patient_id: str | None
    status: str | None  # OBR-25, upper-case
    codes: list[Code] = field(default_factory=list)
    text: str = ""


def read_final_report(raw: bytes) -> FinalReport:
    """Read an inbound ORU^R01 leniently; raise MappingError, naming the field, otherwise.

    MappingError when the bytes are not HL7, MSH-9 is not ORU^R01, there is no OBR, or no
    OBR names its order (OBR-2, OBR-3, OBR-18 and ORC-2/ORC-3 are all empty).
    """
    msg = parse_message(raw)
    code, event = message_type(msg)
    if (code, event) != ("ORU", "R01"):
        raise MappingError(f"MSH-9 {code}^{event} is not ORU^R01", "MSH-9")
    views = _views(msg)
    obrs = [v for v in views if v.name == "OBR"]
    if not obrs:
        raise MappingError("ORU^R01 has no OBR segment", "OBR")
    orc = next((v for v in views if v.name == "ORC"), None)
    identified = [_identifiers(obr, orc) for obr in obrs]
    named = next((ids for ids in identified if any(ids[:3])), None)
    if named is None:
        raise MappingError(
            "no order number: OBR-2, OBR-3, OBR-18, ORC-2 and ORC-3 are all empty", "OBR-18"
        )
    accession, placer, filler, status = named
    pid = next((v for v in views if v.name == "PID"), None)
    msh = views[0]
    return FinalReport(
        control_id=msh.value(_MSH_10),
        accession=accession,
        placer=placer,
        filler=filler,
        patient_id=pid.value(FieldPath("PID", 3)) if pid else None,
        status=status.upper() if status else None,
        codes=_codes(views),
        text=_text(views),
    )


_views = segment_views


def _identifiers(
    obr: SegmentView, orc: SegmentView | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """(accession, placer, filler, status) of one OBR, ORC-2/ORC-3 as the fallback numbers."""
    placer = obr.value(FieldPath("OBR", 2)) or (orc.value(FieldPath("ORC", 2)) if orc else None)
    filler = obr.value(FieldPath("OBR", 3)) or (orc.value(FieldPath("ORC", 3)) if orc else None)
    accession = obr.value(FieldPath("OBR", 18)) or obr.value(FieldPath("OBR", 3))
    return accession, placer, filler, obr.value(FieldPath("OBR", 25))


def _codes(views: list[SegmentView]) -> list[Code]:
    seen: dict[tuple[str, str | None], Code] = {}
    for obx in (v for v in views if v.name == "OBX"):
        coded = obx.repetitions(3)[:1]
        if (_value_type(obx)) in CODED_TYPES:
            coded += obx.repetitions(5)
        for code in _coded(coded):
            seen.setdefault((code.code, code.system), code)
    return list(seen.values())


def _coded(reps: Repetitions) -> list[Code]:
    return [
        Code(value, component(rep, 3), component(rep, 2))
        for rep in reps
        if (value := component(rep, 1))
    ]


def _text(views: list[SegmentView]) -> str:
    lines: list[str] = []
    for obx in (v for v in views if v.name == "OBX"):
        if _value_type(obx) in TEXT_TYPES:
            # A text value is one string: rejoin components a sender left unescaped.
            lines += [
                "^".join("&".join(comp) for comp in rep).rstrip("^") for rep in obx.repetitions(5)
            ]
    return "\n".join(lines).strip("\n")


def _value_type(obx: SegmentView) -> str:
    return (obx.value(FieldPath("OBX", 2)) or "").upper()
